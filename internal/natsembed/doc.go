// Package natsembed starts the real nats-server in-process with JetStream,
// for `teegate dev` and for tests. Each call makes an independent server: a
// test gets its own, on a random loopback port (or no port at all), with its
// JetStream store in a directory it owns.
package natsembed
