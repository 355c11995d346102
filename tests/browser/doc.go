// Package browser holds the tests that drive the auditor page (/ui) in a
// real headless Chromium (Debian's chromium, installed by `make test`)
// through chromedp: the page loads, lists the fleet, and verifies receipts
// with the WebAssembly verifier that `make wasm` builds into gateway/ui.
// Screenshots go to the test's artifact directory (kept with
// `go test -artifacts -outputdir DIR`). Without Chromium or the wasm file
// the tests skip, unless TEEGATE_REQUIRE_CHROMIUM=1 (make test) makes that
// a failure.
package browser
