// Package cluster tests teegate as a fleet of separate OS processes: a
// 3-node nats-server cluster (bin/nats-server from the pinned module), two
// gateway replicas answering the auth callout, and two simulated workers,
// brought up by `teegate cluster up` on loopback ports and always torn down
// by `teegate cluster down`.
package cluster
