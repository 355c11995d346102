// Package engine defines the interface between the worker and the inference
// engines it fronts: the builtin generator (engine/builtin) and any
// OpenAI-compatible HTTP server (engine/openai). An engine receives the exact
// request body bytes and returns the exact response bytes (a JSON body, or the
// ordered SSE data payloads of a stream); the worker hashes and relays those
// bytes unchanged, so engines are the only place a response is serialized.
// Errors the client should see are *Error values carrying an OpenAI-shaped
// body and the HTTP status.
package engine
