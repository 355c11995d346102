package worker

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/worker/wire"
)

// notaryAttester is a stand-in TEE: its "quote" is the report data itself.
// Verification is not what these tests measure; the receipt path is.
type notaryAttester struct{}

func (notaryAttester) Kind() string { return enclave.KindTDX }

func (notaryAttester) GPUEvidence(context.Context, [32]byte) ([]attest.GPUEvidence, error) {
	return nil, nil
}

func (notaryAttester) CPUEvidence(_ context.Context, rd [64]byte) (enclave.CPUEvidence, error) {
	return enclave.CPUEvidence{Format: enclave.KindTDX, Raw: append([]byte("TESTCPU"), rd[:]...)}, nil
}

// memKV is the one KeyValue method the notary uses, in memory.
type memKV struct {
	jetstream.KeyValue
	mu sync.Mutex
	m  map[string][]byte
}

func (kv *memKV) Put(_ context.Context, key string, value []byte) (uint64, error) {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	kv.m[key] = bytes.Clone(value)
	return uint64(len(kv.m)), nil
}

func newTestNotary(tb testing.TB) (*KeeperNotary, *memKV) {
	tb.Helper()
	ctx := context.Background()
	k, err := enclave.NewKeeper(ctx, enclave.KeeperConfig{
		Attester: notaryAttester{},
		Identity: attest.WorkerIdentity{ID: "bench-worker", Models: []string{"bench-model"}},
		Batch:    enclave.BatchConfig{Window: time.Millisecond},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(k.Close)
	kv := &memKV{m: map[string][]byte{}}
	n, err := NewKeeperNotary(ctx, k, kv)
	if err != nil {
		tb.Fatal(err)
	}
	return n, kv
}

// Realistic bodies: a 2 KB chat request, a 4 KB chat completion whose
// content mentions "usage" (as text, escaped quotes included) before the
// real usage object at the end, and a 64-payload stream ending in a usage
// chunk.
func benchRequest() []byte {
	msg := strings.Repeat("Summarize the attached maintenance log in three bullet points. ", 40)
	b, _ := json.Marshal(map[string]any{
		"model":    "bench-model",
		"messages": []map[string]string{{"role": "system", "content": "You are terse."}, {"role": "user", "content": msg}},
		"stream":   false, "max_tokens": 512, "temperature": 0.2,
	})
	return b[:min(len(b), 2048)]
}

func benchResponse() []byte {
	content := `Here is the "usage" section you asked about: {"usage":{"prompt_tokens":999}} and "usage": {"total_tokens":1}. ` +
		strings.Repeat("The pump was serviced on schedule; pressure readings stayed within limits.\n", 48)
	content = content[:3700]
	b, _ := json.Marshal(map[string]any{
		"id": "chatcmpl-bench", "object": "chat.completion", "created": 1795773600, "model": "bench-model",
		"choices": []map[string]any{{"index": 0, "message": map[string]string{"role": "assistant", "content": content}, "finish_reason": "stop"}},
	})
	b = b[:len(b)-1]
	b = append(b, `,"usage":{"prompt_tokens":412,"completion_tokens":830,"total_tokens":1242,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}`...)
	return b
}

func benchStream() [][]byte {
	var out [][]byte
	for i := range 63 {
		finish := "null"
		if i == 62 {
			finish = `"stop"`
		}
		out = append(out, fmt.Appendf(nil,
			`{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1795773600,"model":"bench-model","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":" token%d usage"},"logprobs":null,"finish_reason":%s}]}`, i, finish))
	}
	out = append(out, []byte(`{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1795773600,"model":"bench-model","choices":[],"usage":{"prompt_tokens":412,"completion_tokens":63,"total_tokens":475}}`))
	return out
}

func TestBenchBodies(t *testing.T) {
	if n := len(benchRequest()); n != 2048 {
		t.Errorf("request is %d bytes", n)
	}
	resp := benchResponse()
	if n := len(resp); n < 4000 || n > 4200 || !json.Valid(resp) {
		t.Errorf("response is %d bytes, valid %v", n, json.Valid(resp))
	}
	if n := len(benchStream()); n != 64 {
		t.Errorf("stream has %d payloads", n)
	}
}

// usageOfJSON is the straightforward reading of usage: decode the whole
// body. usageOf must agree with it on every valid body.
func usageOfJSON(body []byte) attest.Usage {
	var v struct {
		Usage *struct {
			PromptTokens     int64 `json:"prompt_tokens"`
			CompletionTokens int64 `json:"completion_tokens"`
			TotalTokens      int64 `json:"total_tokens"`
		} `json:"usage"`
	}
	if json.Unmarshal(body, &v) != nil || v.Usage == nil {
		return attest.Usage{}
	}
	u := attest.Usage{PromptTokens: v.Usage.PromptTokens, CompletionTokens: v.Usage.CompletionTokens, TotalTokens: v.Usage.TotalTokens}
	if !u.Valid() {
		// What a receipt cannot carry counts as no usage.
		return attest.Usage{}
	}
	return u
}

func TestUsageOf(t *testing.T) {
	u := func(p, c, tot int64) attest.Usage {
		return attest.Usage{PromptTokens: p, CompletionTokens: c, TotalTokens: tot}
	}
	cases := []struct {
		name string
		body string
		want attest.Usage
	}{
		{"plain", `{"id":"x","usage":{"prompt_tokens":11,"completion_tokens":2,"total_tokens":13}}`, u(11, 2, 13)},
		{"whitespace", "{ \"usage\" :\n { \"total_tokens\" : 5 , \"prompt_tokens\":3,\"completion_tokens\":2 } }\n", u(3, 2, 5)},
		{"details members", `{"usage":{"prompt_tokens":1,"prompt_tokens_details":{"cached_tokens":7,"total_tokens":99},"completion_tokens":2,"total_tokens":3}}`, u(1, 2, 3)},
		{"in content only", `{"choices":[{"message":{"content":"\"usage\":{\"prompt_tokens\":5}"}}]}`, u(0, 0, 0)},
		{"in content then real", `{"choices":[{"message":{"content":"the \"usage\":{\"total_tokens\":9} field"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`, u(1, 1, 2)},
		{"content ends with escaped quote usage", `{"a":"say \"usage\"","usage":{"total_tokens":4}}`, u(0, 0, 4)},
		{"content after real", `{"usage":{"total_tokens":4},"x":"\"usage\":{\"total_tokens\":8}"}`, u(0, 0, 4)},
		{"backslashes before quote", `{"a":"\\\\","usage":{"total_tokens":6}}`, u(0, 0, 6)},
		{"usage as a string value", `{"note":"usage","usage":{"total_tokens":6}}`, u(0, 0, 6)},
		{"nested usage key", `{"choices":[{"usage":{"total_tokens":9}}]}`, u(0, 0, 0)},
		{"nested after top", `{"usage":{"total_tokens":4},"choices":[{"usage":{"total_tokens":9}}]}`, u(0, 0, 4)},
		{"null usage", `{"usage":null}`, u(0, 0, 0)},
		{"null after object", `{"usage":{"total_tokens":4},"usage":null}`, u(0, 0, 0)},
		{"null counter keeps earlier", `{"usage":{"total_tokens":4,"total_tokens":null}}`, u(0, 0, 4)},
		{"upper-case names", `{"USAGE":{"Total_Tokens":4}}`, u(0, 0, 4)},
		{"long s folds", "{\"u\u017fage\":{\"total_tokens\":4}}", u(0, 0, 4)},
		{"string counter", `{"usage":{"total_tokens":"4","prompt_tokens":1}}`, u(0, 0, 0)},
		{"exponent counter", `{"usage":{"total_tokens":4e0}}`, u(0, 0, 0)},
		{"counter overflow", `{"usage":{"total_tokens":9223372036854775808}}`, u(0, 0, 0)},
		{"negative counter", `{"usage":{"total_tokens":-4}}`, u(0, 0, 0)},
		{"negative counter voids all", `{"usage":{"prompt_tokens":3,"completion_tokens":-1,"total_tokens":2}}`, u(0, 0, 0)},
		{"counter above 2^53-1", `{"usage":{"prompt_tokens":1,"total_tokens":9007199254740992}}`, u(0, 0, 0)},
		{"counter at 2^53-1", `{"usage":{"total_tokens":9007199254740991}}`, u(0, 0, 9007199254740991)},
		{"usage array", `{"usage":[1,2]}`, u(0, 0, 0)},
		{"usage number", `{"usage":5}`, u(0, 0, 0)},
		{"truncated", `{"usage":{"total_tokens":4}`, u(0, 0, 0)},
		{"no usage", `{"id":"x"}`, u(0, 0, 0)},
		{"float counter", `{"usage":{"total_tokens":1.5}}`, u(0, 0, 0)},
		{"not an object", `["usage",{"usage":{"total_tokens":1}}]`, u(0, 0, 0)},
		{"not JSON", `usage":{"total_tokens":1}`, u(0, 0, 0)},
		{"empty", ``, u(0, 0, 0)},
		{"unicode key escape", `{"\u0075sage":{"total_tokens":3}}`, u(0, 0, 3)},
		{"benchmark body", string(benchResponse()), u(412, 830, 1242)},
		{"stream usage chunk", string(benchStream()[63]), u(412, 63, 475)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := usageOf([]byte(c.body)); got != c.want {
				t.Errorf("usageOf = %+v, want %+v", got, c.want)
			}
			if json.Valid([]byte(c.body)) {
				if ref := usageOfJSON([]byte(c.body)); ref != c.want {
					t.Errorf("reference = %+v, want %+v (bad case)", ref, c.want)
				}
			}
		})
	}
}

// FuzzUsageOf checks usageOf against a full decode on valid JSON bodies
// with at most one top-level "usage" member (encoding/json merges
// duplicates, which no engine sends), and that it never panics.
func FuzzUsageOf(f *testing.F) {
	f.Add([]byte(`{"usage":{"prompt_tokens":11,"completion_tokens":2,"total_tokens":13}}`))
	f.Add([]byte(`{"a":"\"usage\":{\"total_tokens\":9}","usage":{"total_tokens":4}}`))
	f.Add([]byte(`{"choices":[{"usage":{"total_tokens":9}}],"usage":null}`))
	f.Add(benchResponse())
	for _, p := range benchStream()[62:] {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got := usageOf(body)
		if !json.Valid(body) || topLevelUsageMembers(body) > 1 {
			return
		}
		if want := usageOfJSON(body); got != want {
			t.Fatalf("usageOf(%q) = %+v, full decode %+v", body, got, want)
		}
	})
}

func TestMayHaveUsage(t *testing.T) {
	for _, c := range []struct {
		p    string
		want bool
	}{
		{`{"choices":[],"usage":{"total_tokens":1}}`, true},
		{`{"usage" : {"total_tokens":1}}`, true},
		{`usage"`, false},
		{`"usage`, false},
		{`{"delta":{"content":" the usage"}}`, false},
		{`{"delta":{"content":"the \"usage\": field"}}`, false},
		{`{"delta":{"content":"usage usage \"usage"}}`, true}, // a false match: only costs a scan
	} {
		if got := mayHaveUsage([]byte(c.p)); got != c.want {
			t.Errorf("mayHaveUsage(%s) = %v", c.p, got)
		}
	}
	for _, p := range benchStream()[:63] {
		if mayHaveUsage(p) {
			t.Errorf("content chunk %s matched", p)
		}
	}
}

func chunkMetaJSON(payload []byte) (attest.ChunkMeta, bool) {
	var m struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		Model   string `json:"model"`
	}
	if json.Unmarshal(payload, &m) != nil {
		return attest.ChunkMeta{}, false
	}
	return attest.ChunkMeta{ID: m.ID, Object: m.Object, Created: m.Created, Model: m.Model}, true
}

func TestChunkMetaOf(t *testing.T) {
	for _, p := range append(benchStream(), []byte(`{"id":"a\"b\u00e9","object":null,"created":-3,"Model":"m","id":null}`),
		[]byte(`{"id":5}`), []byte(`{"created":1.5}`), []byte(`[]`), []byte("{\"id\":\"\xff\"}")) {
		got, ok := chunkMetaOf(p)
		want, wok := chunkMetaJSON(p)
		if got != want || ok != wok {
			t.Errorf("chunkMetaOf(%q) = %+v, %v; full decode %+v, %v", p, got, ok, want, wok)
		}
	}
}

func FuzzChunkMetaOf(f *testing.F) {
	for _, p := range benchStream()[:2] {
		f.Add(p)
	}
	f.Add([]byte(`{"id":"a\"b\u00e9","object":null,"created":-3,"Model":"m","id":null}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		got, ok := chunkMetaOf(p)
		if !json.Valid(p) {
			return
		}
		if want, wok := chunkMetaJSON(p); got != want || ok != wok {
			t.Fatalf("chunkMetaOf(%q) = %+v, %v; full decode %+v, %v", p, got, ok, want, wok)
		}
	})
}

// genJSON writes a random JSON value built from the names and string
// contents most likely to confuse a scanner: member names that fold to the
// ones it looks for, escaped quotes and backslashes, "usage" inside text,
// nulls, wrong types, nesting.
func genJSON(r *rand.Rand, b *bytes.Buffer, depth int) {
	ws := func() {
		if r.IntN(4) == 0 {
			b.WriteString([]string{" ", "\n", "\t ", "\r\n"}[r.IntN(4)])
		}
	}
	// Names as JSON text, escapes included.
	names := []string{`"usage"`, `"USAGE"`, `"u\u0073age"`, `"prompt_tokens"`, `"completion_tokens"`, `"total_tokens"`,
		`"Total_Tokens"`, `"id"`, `"object"`, `"created"`, `"model"`, `"Model"`, `"\u0069d"`, `"choices"`, `"content"`,
		`"usage\""`, `"x"`}
	strs := []string{`"usage"`, `"\"usage\":{\"total_tokens\":7}"`, `"a\\"`, `"\\\""`, `"é\u00e9"`, `""`, `"chatcmpl-1"`, `"}{]["`}
	k := r.IntN(10)
	if depth > 3 {
		k = 6 + r.IntN(4)
	}
	switch {
	case k < 3:
		b.WriteByte('{')
		for i := range r.IntN(5) {
			if i > 0 {
				b.WriteByte(',')
			}
			ws()
			b.WriteString(names[r.IntN(len(names))])
			ws()
			b.WriteByte(':')
			ws()
			genJSON(r, b, depth+1)
			ws()
		}
		b.WriteByte('}')
	case k < 4:
		b.WriteByte('[')
		for i := range r.IntN(4) {
			if i > 0 {
				b.WriteByte(',')
			}
			genJSON(r, b, depth+1)
		}
		b.WriteByte(']')
	case k < 6:
		b.WriteString(strs[r.IntN(len(strs))])
	case k < 8:
		b.WriteString([]string{"0", "7", "-3", "1.5", "2e3", "9223372036854775807", "9223372036854775808"}[r.IntN(7)])
	default:
		b.WriteString([]string{"null", "true", "false"}[r.IntN(3)])
	}
}

// genUsageBody writes an object with a usage member among random ones,
// its counters mixed with other members and values of every type.
func genUsageBody(r *rand.Rand, b *bytes.Buffer) {
	b.WriteByte('{')
	for range r.IntN(3) {
		fmt.Fprintf(b, "%q:", []string{"id", "choices", "x", "usage_x"}[r.IntN(4)])
		genJSON(r, b, 2)
		b.WriteByte(',')
	}
	b.WriteString([]string{`"usage"`, `"Usage"`, `"\u0075sage"`}[r.IntN(3)])
	b.WriteString(":{")
	for i := range 1 + r.IntN(5) {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(b, "%q:", []string{"prompt_tokens", "completion_tokens", "total_tokens", "TOTAL_tokens", "prompt_tokens_details", "n"}[r.IntN(6)])
		if r.IntN(4) == 0 {
			genJSON(r, b, 2)
		} else {
			fmt.Fprintf(b, "%d", r.IntN(5000))
		}
	}
	b.WriteByte('}')
	for range r.IntN(3) {
		fmt.Fprintf(b, ",%q:", []string{"id", "system_fingerprint", "x"}[r.IntN(3)])
		genJSON(r, b, 2)
	}
	b.WriteByte('}')
}

// TestScannerMatchesDecode compares usageOf and chunkMetaOf with a full
// decode on generated objects (a fixed seed: reproducible).
func TestScannerMatchesDecode(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	checked := 0
	for range 20000 {
		b.Reset()
		if r.IntN(2) == 0 {
			genJSON(r, &b, 0)
		} else {
			genUsageBody(r, &b)
		}
		body := b.Bytes()
		if !json.Valid(body) {
			t.Fatalf("generator wrote invalid JSON %q", body)
		}
		if m, ok := chunkMetaOf(body); true {
			if wm, wok := chunkMetaJSON(body); m != wm || ok != wok {
				t.Fatalf("chunkMetaOf(%q) = %+v, %v; full decode %+v, %v", body, m, ok, wm, wok)
			}
		}
		if topLevelUsageMembers(body) > 1 {
			continue
		}
		if got, want := usageOf(body), usageOfJSON(body); got != want {
			t.Fatalf("usageOf(%q) = %+v, full decode %+v", body, got, want)
		}
		if usageOfJSON(body) != (attest.Usage{}) {
			checked++
		}
	}
	if checked < 3000 {
		t.Errorf("only %d generated bodies had a usage: generator too weak", checked)
	}
}

// topLevelUsageMembers counts "usage" members of a top-level object.
func topLevelUsageMembers(body []byte) int {
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return 0
	}
	n := 0
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return 0
		}
		if k, ok := k.(string); ok && strings.EqualFold(k, "usage") {
			n++
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return 0
		}
	}
	return n
}

// TestSealReceipt checks the receipt Seal issues against the bytes it was
// given: the verifier's view.
func TestSealReceipt(t *testing.T) {
	n, kv := newTestNotary(t)
	req, resp := benchRequest(), benchResponse()
	h, err := n.Seal(context.Background(), Meta{RequestID: "req-1", Model: "bench-model", Op: wire.OpChat, Inline: true}, req, resp)
	if err != nil {
		t.Fatal(err)
	}
	sr, err := attest.ParseReceipt([]byte(h.Get(wire.HdrReceipt)))
	if err != nil {
		t.Fatal(err)
	}
	raw := kv.m[sr.Receipt.EvidenceID]
	// Inline or not, a non-stream reply names its bundle and never
	// carries it in a header (it would overflow clients' header limits).
	if raw == nil || h.Get(wire.HdrEvidenceID) != sr.Receipt.EvidenceID || h.Get(wire.HdrEvidence) != "" {
		t.Fatalf("evidence not published, or in a header: %v", h)
	}
	b, err := attest.DecodeBundle(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := attest.VerifyReceipt(sr, &attest.Verified{ID: b.ID(), Bundle: b}, nil, attest.ReceiptCheck{Request: req, Response: resp}); err != nil {
		t.Fatal(err)
	}
	if want := (attest.Usage{PromptTokens: 412, CompletionTokens: 830, TotalTokens: 1242}); sr.Receipt.Usage != want {
		t.Errorf("usage %+v, want %+v", sr.Receipt.Usage, want)
	}
}

// TestSealAbsurdUsage: an engine reporting counters a receipt cannot carry
// still gets its completion signed, with the usage dropped.
func TestSealAbsurdUsage(t *testing.T) {
	n, _ := newTestNotary(t)
	req := benchRequest()
	for _, usage := range []string{
		`{"prompt_tokens":-1,"completion_tokens":2,"total_tokens":1}`,
		`{"prompt_tokens":1,"completion_tokens":9223372036854775807,"total_tokens":9223372036854775807}`,
	} {
		resp := []byte(`{"id":"x","choices":[],"usage":` + usage + `}`)
		h, err := n.Seal(context.Background(), Meta{RequestID: "req-1", Model: "bench-model", Op: wire.OpChat}, req, resp)
		if err != nil {
			t.Fatalf("usage %s: %v", usage, err)
		}
		sr, err := attest.ParseReceipt([]byte(h.Get(wire.HdrReceipt)))
		if err != nil {
			t.Fatal(err)
		}
		if sr.Receipt.Usage != (attest.Usage{}) {
			t.Fatalf("usage %+v", sr.Receipt.Usage)
		}
		s := n.Stream(context.Background(), Meta{RequestID: "req-2", Model: "bench-model", Op: wire.OpChat}, req)
		s.Add("", resp)
		if _, err := s.Finish(context.Background()); err != nil {
			t.Fatalf("stream usage %s: %v", usage, err)
		}
	}
}

func TestStreamReceipt(t *testing.T) {
	n, kv := newTestNotary(t)
	req := benchRequest()
	s := n.Stream(context.Background(), Meta{RequestID: "req-2", Model: "bench-model", Op: wire.OpChat}, req)
	var sse bytes.Buffer
	for _, p := range benchStream() {
		s.Add("", p)
		fmt.Fprintf(&sse, "data: %s\n\n", p)
	}
	chunk, err := s.Finish(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&sse, "data: %s\n\ndata: [DONE]\n\n", chunk)
	res, err := attest.DigestSSE(&sse)
	if err != nil {
		t.Fatal(err)
	}
	b, err := attest.DecodeBundle(kv.m[res.Receipt.Receipt.EvidenceID])
	if err != nil {
		t.Fatal(err)
	}
	d := res.Digest
	if err := attest.VerifyReceipt(res.Receipt, &attest.Verified{ID: b.ID(), Bundle: b}, nil, attest.ReceiptCheck{Request: req, ResponseDigest: &d}); err != nil {
		t.Fatal(err)
	}
	r := res.Receipt.Receipt
	if want := (attest.Usage{PromptTokens: 412, CompletionTokens: 63, TotalTokens: 475}); r.Usage != want || !r.Stream || res.Payloads != 64 {
		t.Errorf("usage %+v stream %v payloads %d", r.Usage, r.Stream, res.Payloads)
	}
	var top struct {
		ID     string `json:"id"`
		Object string `json:"object"`
	}
	if err := json.Unmarshal(chunk, &top); err != nil || top.ID != "chatcmpl-bench" || top.Object != "chat.completion.chunk" {
		t.Errorf("receipt chunk meta %+v, %v", top, err)
	}
}

// BenchmarkEd25519Sign is the floor: one bare signature over a receipt-sized
// message. The receipt benchmarks below report their cost next to it.
func BenchmarkEd25519Sign(b *testing.B) {
	priv := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	msg := make([]byte, 420)
	b.ReportAllocs()
	for b.Loop() {
		ed25519.Sign(priv, msg)
	}
}

// BenchmarkSealNonStream is the worker's whole added cost for a non-stream
// receipt: hashing both bodies, reading usage, signing, and the headers.
func BenchmarkSealNonStream(b *testing.B) {
	n, _ := newTestNotary(b)
	req, resp := benchRequest(), benchResponse()
	meta := Meta{RequestID: "req_0123456789abcdef01234567", Model: "bench-model", Op: wire.OpChat}
	ctx := context.Background()
	b.SetBytes(int64(len(req) + len(resp)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := n.Seal(ctx, meta, req, resp); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStreamNotary is the added cost for a 64-payload stream: the
// per-payload digest and usage check, then the signed receipt chunk.
func BenchmarkStreamNotary(b *testing.B) {
	n, _ := newTestNotary(b)
	req, payloads := benchRequest(), benchStream()
	meta := Meta{RequestID: "req_0123456789abcdef01234567", Model: "bench-model", Op: wire.OpChat}
	ctx := context.Background()
	b.ReportAllocs()
	var adds, finishes time.Duration
	runs := 0
	for b.Loop() {
		t0 := time.Now()
		s := n.Stream(ctx, meta, req)
		for _, p := range payloads {
			s.Add("", p)
		}
		t1 := time.Now()
		if _, err := s.Finish(ctx); err != nil {
			b.Fatal(err)
		}
		adds += t1.Sub(t0)
		finishes += time.Since(t1)
		runs++
	}
	// The per-payload part is spread over the stream; Finish is what the
	// client waits for after the last token.
	b.ReportMetric(float64(adds.Nanoseconds())/float64(runs*len(payloads)), "ns/payload")
	b.ReportMetric(float64(finishes.Nanoseconds())/float64(runs), "ns/finish")
}

// BenchmarkUsageOf compares the usage scan with a full decode of the 4 KB
// body.
func BenchmarkUsageOf(b *testing.B) {
	resp := benchResponse()
	for _, c := range []struct {
		name string
		f    func([]byte) attest.Usage
	}{{"scan", usageOf}, {"decode", usageOfJSON}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(resp)))
			b.ReportAllocs()
			for b.Loop() {
				c.f(resp)
			}
		})
	}
}

// BenchmarkSHA256 is the hashing floor for the same bodies.
func BenchmarkSHA256(b *testing.B) {
	req, resp := benchRequest(), benchResponse()
	b.SetBytes(int64(len(req) + len(resp)))
	b.ReportAllocs()
	for b.Loop() {
		sha256.Sum256(req)
		sha256.Sum256(resp)
	}
}

// BenchmarkSealPaced is the request-path cost of a receipt when requests
// arrive with idle time between them, as they do at an inference worker:
// the keeper's presigner then has a nonce pair ready, so the signature costs
// its message-dependent half only. Each iteration pauses, times one Seal,
// pauses again and times one plain ed25519.Sign of the same size as the
// baseline under the same conditions (a cold cache after the pause weighs on
// both). The metrics are medians; ns/op includes the pauses.
func BenchmarkSealPaced(b *testing.B) {
	n, _ := newTestNotary(b)
	req, resp := benchRequest(), benchResponse()
	meta := Meta{RequestID: "req_0123456789abcdef01234567", Model: "bench-model", Op: wire.OpChat}
	ctx := context.Background()
	sk := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	msg := make([]byte, 400)
	var seal, plain []time.Duration
	for b.Loop() {
		time.Sleep(200 * time.Microsecond)
		t0 := time.Now()
		if _, err := n.Seal(ctx, meta, req, resp); err != nil {
			b.Fatal(err)
		}
		seal = append(seal, time.Since(t0))
		time.Sleep(200 * time.Microsecond)
		t0 = time.Now()
		ed25519.Sign(sk, msg)
		plain = append(plain, time.Since(t0))
	}
	slices.Sort(seal)
	slices.Sort(plain)
	b.ReportMetric(float64(seal[len(seal)/2].Nanoseconds()), "seal-median-ns")
	b.ReportMetric(float64(plain[len(plain)/2].Nanoseconds()), "ed25519-sign-median-ns")
}
