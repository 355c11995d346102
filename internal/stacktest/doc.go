// Package stacktest starts an in-process teegate stack for a test: its own
// embedded nats-server with JetStream and the admission callout in
// t.TempDir(), the gateway on a random loopback port, and builtin-engine
// workers with the simulated TEE that join by their evidence under the dev
// policy (WithPolicy changes it), all shut down by t.Cleanup.
package stacktest
