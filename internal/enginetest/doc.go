// Package enginetest provides an engine for tests that need to control a
// stream step by step: each payload is handed over by the test, and the
// engine reports when the worker closed (canceled) the stream.
package enginetest
