// Package bench measures what teegate costs against a direct engine call,
// in one run on one machine: a zero-latency OpenAI-compatible upstream
// served over HTTP is the baseline, and the whole product (embedded NATS,
// gateway, admitted worker with the simulated TEE and receipts on) is
// driven over that same upstream through the openai engine, and over the
// builtin engine with no latency profile. Every target gets the same load
// generator (vegeta as a library: open loop at fixed rates, closed loop for
// the peak). The report puts throughput, latency percentiles, the latency
// the stack adds at the same rate, streaming time-to-first-token overhead
// and resident memory per open stream side by side, then offers the stack
// twice its measured peak (the overload run: goodput, refusals, timeouts).
//
// Numbers are reported, never asserted: tests run the harness in a tiny
// mode and check only the shape of the report. Wiring (flags, profiles,
// file-descriptor limits, the child process that holds the open streams)
// lives in cmd/teegate.
package bench
