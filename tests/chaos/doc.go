// Package chaos is the fault suite: the stack under faults it must survive
// without losing or leaking anything. A worker process killed with SIGKILL
// in the middle of a stream, the NATS server restarted under a gateway and
// a worker, an engine slower than the request deadline, clients that
// disconnect mid-stream, read slowly or write slowly, and a flood of
// malformed and oversized requests. After each fault the suite checks that
// the service still answers, that generation stopped where it had to, and
// that goroutines and heap came back to where they were.
//
// `go test ./tests/chaos` (part of make test) runs the short version, about
// a minute; `make chaos` sets TEEGATE_CHAOS_LONG=1 for more rounds, bigger
// floods and longer slow clients. Timings such as how long a disconnect
// takes to stop generation are logged, and asserted only against generous
// bounds.
package chaos
