// Package gateway is the OpenAI-compatible HTTP edge (gofiber/fiber v2). It
// authenticates API keys, validates requests, and forwards the exact request
// body bytes over NATS to a worker serving the requested model (package
// wire), then relays the worker's exact response bytes: one body for
// non-stream calls, SSE events flushed one by one for streams. It never
// re-serializes a response, never logs request or response content, and maps
// every failure once, in errors.go, to an OpenAI-shaped error with the status
// the official SDKs expect. Which workers may serve is decided by
// gateway/admission (NATS enforces it); the gateway reads its decisions to
// answer 503 "no attested worker" for a model only refused workers offer,
// and lists them to admin keys at GET /v1/attestation/workers. The gateway
// is outside the trusted computing base: what it relays is proven by the
// worker's receipts, not by it.
package gateway
