//go:build js && wasm

// Command teegate-wasm is the auditor page's verifier: built with
// GOOS=js GOARCH=wasm (make wasm), it exports teegateVerifier.verifyReceipt
// and teegateVerifier.verifyEvidence to JavaScript. Both take JSON and
// return a Promise of JSON (internal/browserverify's Report and
// EvidenceReport); the checks are attest's and policies', compiled into
// the page, so the browser, not the gateway that served it, decides what
// verifies.
package main

import (
	"context"
	"encoding/json"
	"syscall/js"

	"github.com/teegate/teegate/internal/browserverify"
)

func main() {
	api := js.Global().Get("Object").New()
	api.Set("verifyReceipt", promised(func(arg string) any {
		var in browserverify.Input
		if err := json.Unmarshal([]byte(arg), &in); err != nil {
			return map[string]any{"error": "bad input: " + err.Error()}
		}
		return browserverify.VerifyReceipt(context.Background(), in)
	}))
	api.Set("verifyEvidence", promised(func(arg string) any {
		var in struct {
			Evidence       string `json:"evidence"`
			AllowSimulated bool   `json:"allow_simulated"`
		}
		if err := json.Unmarshal([]byte(arg), &in); err != nil {
			return map[string]any{"error": "bad input: " + err.Error()}
		}
		return browserverify.VerifyEvidence(context.Background(), in.Evidence, in.AllowSimulated)
	}))
	js.Global().Set("teegateVerifier", api)
	js.Global().Call("dispatchEvent", js.Global().Get("Event").New("teegate-verifier-ready"))
	select {}
}

// promised wraps f as a JavaScript function taking one JSON string and
// returning a Promise of a JSON string. f runs in its own goroutine: a
// callback that blocks would stall the page's event loop, which Go's
// timers in wasm need.
func promised(f func(string) any) js.Func {
	return js.FuncOf(func(_ js.Value, args []js.Value) any {
		arg := ""
		if len(args) > 0 {
			arg = args[0].String()
		}
		return js.Global().Get("Promise").New(js.FuncOf(func(_ js.Value, pr []js.Value) any {
			resolve := pr[0]
			go func() {
				out, err := json.Marshal(f(arg))
				if err != nil {
					out, _ = json.Marshal(map[string]string{"error": err.Error()})
				}
				resolve.Invoke(string(out))
			}()
			return nil
		}))
	})
}
