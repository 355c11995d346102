// Package responses is the OpenAI Responses API (POST /v1/responses) on the
// worker side, where the receipt is signed: it validates a Responses request
// (ParseRequest), turns it into the equivalent chat completions request
// (Request.ChatBody), and builds the response object and the stream's event
// sequence (Emitter) — response.created, response.in_progress,
// response.output_item.added, response.content_part.added,
// response.output_text.delta, response.output_text.done,
// response.content_part.done, response.output_item.done and
// response.completed (or response.incomplete), each with its
// sequence_number — from chat completion results (FromChat, NewChatStream).
//
// The builtin engine answers the Responses API through it, and so does the
// openai engine for servers that do not serve /v1/responses themselves; an
// upstream that serves it is passed through unchanged instead. Either way
// the bytes the client receives are produced here or upstream, inside the
// trusted side, and the gateway only relays them.
//
// The gateway is stateless: responses are never stored ("store": false),
// and what would need stored state (previous_response_id, conversation,
// item_reference inputs, background mode) is refused with a 400 that says
// how to send the whole conversation in "input" instead.
package responses
