// Package stacktest starts an in-process teegate stack for a test: its own
// embedded nats-server with JetStream in t.TempDir(), the gateway on a random
// loopback port, and builtin-engine workers, all shut down by t.Cleanup.
package stacktest
