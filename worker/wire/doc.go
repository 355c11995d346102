// Package wire is the gateway↔worker protocol over NATS: subject names,
// typed messages that write and decode their own headers (Request, Accept,
// Reply; message.go), the one error table (wire code ↔ HTTP status ↔ OpenAI
// error type; errors.go), both halves of the stream protocol
// (StreamSender, StreamReceiver; stream.go) and the protocol version. Both
// sides import it and nothing else about each other.
//
// Every request that sets HdrAccept is first answered with a KindAccept
// message whose reply subject is the request's control subject, in the
// worker connection's own inbox space: acks, cancels and the gateway's
// liveness probes go there. The worker keeps it subscribed while the
// connection lives, so a probe the server bounces as no-responders tells
// the gateway that the worker holding the request is gone.
//
// A request is one NATS message on InferSubject(model) carrying the exact
// client request body and metadata headers. Workers serve a model in the
// queue group QueueGroup, so each request reaches one worker.
//
// Non-stream: the worker answers with one reply message (KindResponse or
// KindError) whose data are the exact response bytes and whose headers carry
// the HTTP status, content type and receipt.
//
// Stream: the worker sends ordered messages to the request's reply inbox:
// zero or more KindData messages (one SSE data payload each, Seq 1, 2, …)
// then exactly one KindEnd or KindError. Responses API streams
// (OpResponses) name their events: each KindData and KindEnd message then
// carries HdrEvent, the SSE "event:" field the gateway writes before its
// data, and the stream ends without "data: [DONE]", as OpenAI's does. Each KindData message has a reply
// subject owned by the worker: the gateway publishes acks there (HdrAck =
// highest seq written to the client) so the worker never has more than the
// request's window of unacknowledged chunks in flight, and publishes
// HdrCancel there when the client goes away. A worker also stops when the
// inbox disappears (NATS answers its next chunk with a no-responders
// status on the ack subject).
//
// Admission (admission.go): a worker connects with its evidence id as user
// name and its epoch signing key as nkey, signing a domain-separated form
// of the server's nonce; it submits its bundle on SubmitSubject(its nkey)
// and asks the server (UserInfoSubject) whether its connection was
// admitted. An admitted worker publishes only replies to requests it
// received, its own registry record and its own admission subjects; the
// gateway publishes acks only to subjects inside the worker's own inbox
// space (AckSubjectOK).
package wire
