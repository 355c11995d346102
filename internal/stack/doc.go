// Package stack assembles the whole product in one process — an embedded
// nats-server with JetStream, the gateway on a loopback listener, and
// workers — for `teegate dev` and for tests. Each Stack is independent: its
// own server, data directory and ports, so tests can run many side by side.
package stack
