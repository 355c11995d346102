// Package e2e tests the whole product through its public surface: the
// official openai-go SDK and raw HTTP against an in-process stack (embedded
// nats-server, gateway, worker, builtin engine), and the teegate binary
// itself.
package e2e
