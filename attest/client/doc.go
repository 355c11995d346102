// Package client verifies teegate answers where they arrive: in the HTTP
// client of the application that asked. A Verifier is an http.RoundTripper
// wrapper (RoundTripper) or an openai-go middleware (Middleware) that, for
// every POST to /v1/chat/completions, /v1/completions, /v1/embeddings and
// /v1/responses,
// keeps the exact request bytes it sends, reads the receipt of the answer
// (the Teegate-Receipt header, or the receipt event that ends a stream),
// obtains the evidence bundle the receipt names (inline, from its cache, or
// from GET {base}/v1/attestation/evidence/{id}), verifies bundle, key
// binding, signature, both hashes, the client nonce with its batch proof,
// and finally the caller's Policy over the claims. It fails closed: a
// non-stream answer that does not verify is replaced by an error wrapping
// ErrVerification; a stream delivers its content chunks as they come but
// its body returns an error instead of the receipt event when verification
// fails, and at end of stream when no receipt arrived. 4xx and 5xx answers
// pass through unverified (they carry no completion). The outcome reaches
// the caller through a Result registered with WithResult. Verified
// exchanges can be kept as Transcripts (request, response, receipt,
// evidence) and re-verified offline with VerifyTranscript, which is also
// what `teegate verify response|transcript` runs. Pure Go, no cgo; the only
// I/O is the evidence fetch through the caller's transport and the
// transcript files the caller names.
package client
