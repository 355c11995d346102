// Package cliutil holds the wiring the teegate binaries share: logger
// setup, signal handling, default paths and the worker's engine flags. It
// is wiring only; no product logic lives here.
package cliutil
