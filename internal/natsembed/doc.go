// Package natsembed starts the real nats-server in-process with JetStream,
// for `teegate dev` and for tests. Each call makes an independent server: a
// test gets its own, on a random loopback port (or no port at all), with its
// JetStream store in a directory it owns. With Config.Auth the server runs
// with accounts: an application account (JetStream on) whose static
// service users have full permissions, a system account for server
// requests, and optionally the auth callout (DESIGN §4) through which every
// other connection — a worker — is admitted by gateway/admission with the
// permissions its evidence earns. Connect logs in as the service user,
// ConnectSystem as the system user, ConnectBare with the caller's
// credentials only.
package natsembed
