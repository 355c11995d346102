//go:build !(js && wasm)

// Command teegate-wasm is the auditor page's in-browser verifier; it only
// builds for the browser: GOOS=js GOARCH=wasm go build (make wasm).
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "teegate-wasm runs in a browser: build it with GOOS=js GOARCH=wasm (make wasm)")
	os.Exit(2)
}
