// Package proctest serves the multi-process tests (tests/cluster,
// tests/chaos, tests/serverless): the project's binaries built once per
// test process, a locked buffer for a child's output, and a free loopback
// address. It is imported by tests only.
package proctest
