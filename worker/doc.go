// Package worker is the process that runs inside the TEE: a NATS service
// that takes requests for the models its engine serves (one queue group per
// model subject, see package wire), calls the engine with the exact request
// bytes, and relays the engine's exact response bytes back — a single reply
// for non-stream calls, ordered and flow-controlled chunks for streams. It
// keeps its registry record fresh in JetStream so the gateway can route to
// it. With a key keeper it has no NATS credentials: it connects by its
// evidence and serves only once the gateway's admission admits it, one
// connection per key epoch, replaced make-before-break on rotation or when
// the server asks it to drain (join.go). Files: worker.go (config,
// lifecycle), serve.go (serving requests on one connection), stream.go (the
// worker half of the stream protocol), registry.go (its record and the
// heartbeat), join.go (epochs, evidence publication, make-before-break).
// It never logs request or response content.
package worker
