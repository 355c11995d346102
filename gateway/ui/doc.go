// Package ui is the auditor page served at /ui: static assets embedded
// with go:embed (no CDN, no third-party code) and the in-browser verifier,
// cmd/teegate-wasm compiled to WebAssembly by `make wasm` into wasm/
// (generated, not in git; without it the page says how to build it). The
// page asks for an admin API key and keeps it in the tab's sessionStorage,
// sending it only as an Authorization header to the gateway's own API;
// every verdict it shows comes from the wasm verifier running in the
// auditor's browser, never from the gateway, which is outside the trusted
// base (DESIGN §1).
package ui
