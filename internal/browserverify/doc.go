// Package browserverify is the verifier the auditor page (/ui) runs in the
// browser: cmd/teegate-wasm compiles it with GOOS=js GOARCH=wasm and
// exports its two functions to JavaScript. It adds no checks of its own: a
// receipt with the exact request and response bytes goes through
// attest/client.VerifyTranscript, the code path of `teegate verify
// response`, so the page names a failure exactly as the CLI does; it only
// reports the outcome as the steps an auditor reads (receipt → evidence →
// key binding → signature → hashes → policy). Without the bytes the hashes
// are reported as not checked and the other steps run through attest and
// policies directly. Pure Go: it builds and is tested natively too.
package browserverify
