// Package serverless tests serverless dispatch (issue 10) with separate OS
// processes: `teegate dev --workers 0` (embedded NATS and the gateway) or a
// real bin/nats-server with `teegate gateway`, and `teegate worker`
// processes (simulated TEE) started, killed (SIGKILL), drained (SIGTERM)
// and restarted while requests are in flight: cold start from zero, a full
// queue and a cold-start timeout, a worker crash, a worker drain and a NATS
// restart. Every process a test starts is reaped by its cleanup.
package serverless
