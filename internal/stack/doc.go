// Package stack assembles the whole product in one process — an embedded
// nats-server with JetStream and accounts, the admission service answering
// its auth callout with a policy (Config.Policy, held in a policies.Holder
// and, for a file, watched), the gateway on a loopback listener, and
// workers — for `teegate dev` and for tests. Workers with the simulated TEE
// connect bare and are admitted by their evidence, exactly as a worker in a
// real TEE is; SetPolicy and ReloadPolicy swap the policy and re-judge the
// workers. Each Stack is independent: its own server, data directory, ports
// and admission key, so tests can run many side by side.
package stack
