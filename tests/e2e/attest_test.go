package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/verifiers"
	"github.com/teegate/teegate/internal/stack"
	"github.com/teegate/teegate/internal/stacktest"
)

func simVerifier() *attest.Verifier {
	return attest.NewVerifier(verifiers.Options(verifiers.Config{AllowSimulated: true}), 64)
}

// A non-stream receipt verifies against the exact request and response
// bytes and the evidence fetched by id, and is retrievable by request id.
func TestReceiptNonStream(t *testing.T) {
	s := stacktest.Start(t)
	body := `{"model":"teegate-builtin","messages":[{"role":"user","content":"Tell me about gardens."}],"max_tokens":12}`
	resp, respBody := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, body)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, respBody)
	}
	sr, err := attest.ParseReceipt([]byte(resp.Header.Get("Teegate-Receipt")))
	if err != nil {
		t.Fatal(err)
	}
	if sr.Receipt.Stream || sr.Receipt.RequestID != resp.Header.Get("x-request-id") || sr.Receipt.Usage.TotalTokens == 0 {
		t.Fatalf("receipt %+v", sr.Receipt)
	}
	er, evidence := get(t, s.URL+"/v1/attestation/evidence/"+sr.Receipt.EvidenceID)
	if er.StatusCode != 200 {
		t.Fatalf("evidence: %d %s", er.StatusCode, evidence)
	}
	v := simVerifier()
	c, err := v.Receipt(context.Background(), sr, attest.ReceiptCheck{Request: []byte(body), Response: respBody}, evidence, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Simulated || c.TEE != "simulated" || c.Binding == nil || !c.Binding.ReportDataMatched || len(c.GPUs) != 1 || !c.Binding.GPUNoncesMatched {
		t.Fatalf("claims %+v", c)
	}
	// Any changed byte of the response fails.
	bad := bytes.Clone(respBody)
	bad[len(bad)/2] ^= 1
	if _, err := v.Receipt(context.Background(), sr, attest.ReceiptCheck{Request: []byte(body), Response: bad}, nil, nil); err == nil {
		t.Fatal("altered response verified")
	}
	// Without AllowSimulated the same evidence is refused.
	strict := attest.NewVerifier(verifiers.Options(verifiers.Config{}), 8)
	if _, err := strict.Receipt(context.Background(), sr, attest.ReceiptCheck{Request: []byte(body), Response: respBody}, evidence, nil); err == nil {
		t.Fatal("simulated evidence accepted without AllowSimulated")
	}
	// Retrievable by request id (stored off the request path: poll).
	var stored []byte
	stacktest.Eventually(t, 10*time.Second, func() bool {
		r, b := get(t, s.URL+"/v1/attestation/receipts/"+sr.Receipt.RequestID)
		stored = b
		return r.StatusCode == 200
	}, "stored receipt")
	again, err := attest.ParseReceipt(stored)
	if err != nil || again.Receipt != sr.Receipt || !bytes.Equal(again.Signature, sr.Signature) {
		t.Fatalf("stored receipt differs: %v", err)
	}
	if r, _ := get(t, s.URL+"/v1/attestation/evidence/"+strings.Repeat("0", 64)); r.StatusCode != 404 {
		t.Fatalf("unknown evidence: %d", r.StatusCode)
	}
}

// A streamed receipt covers every data payload before it; inline evidence
// travels in the final chunk.
func TestReceiptStreamInlineEvidence(t *testing.T) {
	s := stacktest.Start(t)
	body := `{"model":"teegate-builtin","messages":[{"role":"user","content":"Tell me about bread."}],"max_tokens":12,"stream":true,"stream_options":{"include_usage":true}}`
	resp, raw := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, body, "Teegate-Inline-Evidence", "1")
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, raw)
	}
	res, err := attest.DigestSSE(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if res.Receipt == nil || len(res.Evidence) == 0 || !res.Receipt.Receipt.Stream {
		t.Fatalf("no receipt or inline evidence: %+v", res)
	}
	if res.Receipt.Receipt.Usage.CompletionTokens != 12 {
		t.Fatalf("usage %+v", res.Receipt.Receipt.Usage)
	}
	v := simVerifier()
	if _, err := v.Receipt(context.Background(), res.Receipt, attest.ReceiptCheck{Request: []byte(body), ResponseDigest: &res.Digest}, res.Evidence, nil); err != nil {
		t.Fatal(err)
	}
	// Dropping one chunk breaks it.
	i := bytes.Index(raw, []byte("\n\ndata: "))
	cut := append(bytes.Clone(raw[:i+2]), raw[i+2+bytes.Index(raw[i+2:], []byte("\n\n"))+2:]...)
	res2, err := attest.DigestSSE(bytes.NewReader(cut))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Receipt(context.Background(), res2.Receipt, attest.ReceiptCheck{Request: []byte(body), ResponseDigest: &res2.Digest}, nil, nil); err == nil {
		t.Fatal("stream with a dropped chunk verified")
	}
}

// GET /v1/attestation?model&nonce returns evidence bound to the nonce.
func TestFreshEvidenceOnDemand(t *testing.T) {
	s := stacktest.Start(t)
	resp, raw := get(t, s.URL+"/v1/attestation?model=teegate-builtin&nonce=client-nonce-42")
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, raw)
	}
	v := simVerifier()
	ver, err := v.Bundle(context.Background(), raw)
	if err != nil {
		t.Fatal(err)
	}
	if ver.Bundle.EpochNonce != attest.ChallengeNonce("client-nonce-42") {
		t.Fatal("evidence not bound to the nonce")
	}
	if r, _ := get(t, s.URL+"/v1/attestation?model=teegate-builtin"); r.StatusCode != 400 {
		t.Fatalf("missing nonce: %d", r.StatusCode)
	}
	if r, _ := get(t, s.URL+"/v1/attestation?model=nope&nonce=x"); r.StatusCode != 404 {
		t.Fatalf("unknown model: %d", r.StatusCode)
	}
}

// Fresh mode: 200 concurrent requests with nonces are each covered by a
// quote generated after they arrived (the quote's report data commits to
// a Merkle root over receipts that carry the nonces), with far fewer quotes
// than requests.
func TestFreshModeBatching(t *testing.T) {
	// Realistic quote time (the simulator's default), so batching is honest.
	s := stacktest.Start(t, func(c *stack.Config) { c.TEE.QuoteDelay = 0 })
	const n = 200
	type result struct {
		nonce string
		body  string
		resp  []byte
		hdr   http.Header
	}
	results := make([]result, n)
	start := time.Now().UTC().Truncate(time.Second)
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nonce := fmt.Sprintf("nonce-%03d-%d", i, time.Now().UnixNano())
			body := fmt.Sprintf(`{"model":"teegate-builtin","messages":[{"role":"user","content":"question %d"}],"max_tokens":4}`, i)
			req, _ := http.NewRequest("POST", s.URL+"/v1/chat/completions", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+stacktest.APIKey)
			req.Header.Set("Teegate-Nonce", nonce)
			resp, err := client.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("status %d %s", resp.StatusCode, b)
				return
			}
			results[i] = result{nonce: nonce, body: body, resp: b, hdr: resp.Header}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	v := simVerifier()
	fresh := map[string]bool{}
	for _, r := range results {
		sr, err := attest.ParseReceipt([]byte(r.hdr.Get("Teegate-Receipt")))
		if err != nil {
			t.Fatal(err)
		}
		if sr.Batch == nil || sr.Receipt.Nonce != r.nonce {
			t.Fatalf("receipt lacks batch proof or nonce: %+v", sr.Receipt)
		}
		var bundleRaw, freshRaw []byte
		if _, ok := v.Known(sr.Receipt.EvidenceID); !ok {
			_, bundleRaw = get(t, s.URL+"/v1/attestation/evidence/"+sr.Receipt.EvidenceID)
		}
		if !fresh[sr.Batch.EvidenceID] {
			_, freshRaw = get(t, s.URL+"/v1/attestation/evidence/"+sr.Batch.EvidenceID)
			fb, err := attest.DecodeBundle(freshRaw)
			if err != nil {
				t.Fatal(err)
			}
			if fb.Created.Before(start) {
				t.Fatalf("fresh evidence created %v, before the requests (%v)", fb.Created, start)
			}
		}
		fresh[sr.Batch.EvidenceID] = true
		if _, err := v.Receipt(context.Background(), sr, attest.ReceiptCheck{Request: []byte(r.body), Response: r.resp, Nonce: r.nonce}, bundleRaw, freshRaw); err != nil {
			t.Fatalf("receipt %d: %v", sr.Batch.LeafIndex, err)
		}
		// The wrong nonce fails.
		if _, err := v.Receipt(context.Background(), sr, attest.ReceiptCheck{Request: []byte(r.body), Response: r.resp, Nonce: r.nonce + "x"}, nil, nil); err == nil {
			t.Fatal("receipt verified with another nonce")
		}
	}
	quotes := len(fresh)
	t.Logf("fresh mode: %d requests covered by %d fresh quotes (%.1f requests per quote)", n, quotes, float64(n)/float64(quotes))
	if quotes*4 > n {
		t.Fatalf("%d quotes for %d requests: batching is not working", quotes, n)
	}
}

// Inline evidence fits the header limits of clients and proxies (issue 11,
// finding 6): a non-stream answer asked for inline evidence names its
// bundle in Teegate-Evidence-Id, carries no bundle in a header and keeps
// all its headers under 8 KiB, and the named bundle is fetched; a stream
// names its bundle too and delivers it in the receipt event.
func TestInlineEvidenceFitsHeaders(t *testing.T) {
	s := stacktest.Start(t)
	body := `{"model":"teegate-builtin","messages":[{"role":"user","content":"hi"}],"max_tokens":3}`
	resp, _ := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, body, "Teegate-Inline-Evidence", "1")
	n := 0
	for k, vs := range resp.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	if n > 8<<10 || resp.Header.Get("Teegate-Evidence") != "" {
		t.Fatalf("%d bytes of headers (bundle header %d bytes)", n, len(resp.Header.Get("Teegate-Evidence")))
	}
	id := resp.Header.Get("Teegate-Evidence-Id")
	_, raw := get(t, s.URL+"/v1/attestation/evidence/"+id)
	if attest.BundleID(raw) != id {
		t.Fatal("fetched evidence is not the named bundle")
	}
	sbody := `{"model":"teegate-builtin","messages":[{"role":"user","content":"hi"}],"max_tokens":3,"stream":true}`
	resp, out := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, sbody, "Teegate-Inline-Evidence", "1")
	res, err := attest.DigestSSE(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if res.Evidence == nil || attest.BundleID(res.Evidence) != res.Receipt.Receipt.EvidenceID {
		t.Fatal("stream receipt event carries no inline bundle, or another one")
	}
	if resp.Header.Get("Teegate-Evidence-Id") != res.Receipt.Receipt.EvidenceID {
		t.Fatalf("stream Teegate-Evidence-Id %q, receipt names %s", resp.Header.Get("Teegate-Evidence-Id"), res.Receipt.Receipt.EvidenceID)
	}
}
