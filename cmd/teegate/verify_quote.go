package main

import (
	"context"
	"fmt"
	"io"
)

// runVerifyQuote is written in the real-evidence work (issue 4).
func runVerifyQuote(_ context.Context, _ []string, _, stderr io.Writer) error {
	fmt.Fprintln(stderr, "teegate verify quote: not built yet")
	return errUsage
}
