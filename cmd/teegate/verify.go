package main

import (
	"context"
	"fmt"
	"io"
)

// runVerify dispatches `teegate verify <what>`: offline verification for
// auditors. Each subcommand exits 0 only when everything verified, and
// otherwise prints one line naming what failed.
func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	subs := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"quote":      runVerifyQuote,
		"gpu":        runVerifyGPU,
		"response":   runVerifyResponse,
		"transcript": runVerifyTranscript,
	}
	if len(args) == 0 || subs[args[0]] == nil {
		fmt.Fprintln(stderr, "usage: teegate verify quote|gpu|response|transcript [flags]")
		return errUsage
	}
	return subs[args[0]](ctx, args[1:], stdout, stderr)
}
