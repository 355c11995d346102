package attest

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/teegate/teegate/attest/merkle"
)

// oracleSignedReceipt is the envelope decoder this package used before its
// hand-written one: encoding/json with DisallowUnknownFields and the same
// checks on the values. The new decoder must never accept what this one
// refuses, nor read anything else from what both accept.
func oracleSignedReceipt(data []byte) (*SignedReceipt, error) {
	var w struct {
		Batch *struct {
			EvidenceID string   `json:"evidence_id"`
			LeafIndex  *uint64  `json:"leaf_index"`
			Proof      []string `json:"proof"`
			Root       string   `json:"root"`
			TreeSize   *uint64  `json:"tree_size"`
		} `json:"batch"`
		Receipt   json.RawMessage `json:"receipt"`
		Signature b64             `json:"signature"`
	}
	if err := strictUnmarshal(data, &w); err != nil {
		return nil, err
	}
	if len(w.Receipt) == 0 {
		return nil, ErrMalformed
	}
	var out SignedReceipt
	r, err := oracleReceipt(w.Receipt)
	if err != nil {
		return nil, err
	}
	out.Receipt = r
	if len(w.Signature) != 64 {
		return nil, ErrMalformed
	}
	out.Signature = w.Signature
	if b := w.Batch; b != nil {
		if !isHexID(b.EvidenceID) || b.LeafIndex == nil || b.TreeSize == nil || len(b.Proof) > merkle.MaxProofLen {
			return nil, ErrBatchProof
		}
		bp := &BatchProof{EvidenceID: b.EvidenceID, LeafIndex: *b.LeafIndex, TreeSize: *b.TreeSize, Proof: make([][32]byte, len(b.Proof))}
		for i, p := range b.Proof {
			if err := oracleDigest(p, &bp.Proof[i]); err != nil {
				return nil, err
			}
		}
		if err := oracleDigest(b.Root, &bp.Root); err != nil {
			return nil, err
		}
		out.Batch = bp
	}
	return &out, nil
}

type oraclePresent struct {
	set bool
	v   string
}

func (p *oraclePresent) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return ErrMalformed
	}
	p.set = true
	return json.Unmarshal(b, &p.v)
}

func oracleReceipt(data []byte) (Receipt, error) {
	var w struct {
		Created        string        `json:"created"`
		EvidenceID     string        `json:"evidence_id"`
		Model          oraclePresent `json:"model"`
		Nonce          oraclePresent `json:"nonce"`
		RequestID      string        `json:"request_id"`
		RequestSHA256  string        `json:"request_sha256"`
		ResponseSHA256 string        `json:"response_sha256"`
		Stream         *bool         `json:"stream"`
		Usage          *struct {
			CompletionTokens *int64 `json:"completion_tokens"`
			PromptTokens     *int64 `json:"prompt_tokens"`
			TotalTokens      *int64 `json:"total_tokens"`
		} `json:"usage"`
		UsageSource oraclePresent `json:"usage_source"`
		Version     int           `json:"version"`
	}
	if err := strictUnmarshal(data, &w); err != nil {
		return Receipt{}, err
	}
	if w.Stream == nil || !w.Model.set || w.Usage == nil || w.Usage.CompletionTokens == nil ||
		w.Usage.PromptTokens == nil || w.Usage.TotalTokens == nil || (w.Nonce.set && w.Nonce.v == "") ||
		(w.UsageSource.set && w.UsageSource.v == "") {
		return Receipt{}, ErrMalformed
	}
	created, err := time.Parse(TimeLayout, w.Created)
	if err != nil {
		return Receipt{}, err
	}
	out := Receipt{
		Version: w.Version, RequestID: w.RequestID, EvidenceID: w.EvidenceID,
		Model: w.Model.v, Stream: *w.Stream, Nonce: w.Nonce.v, UsageSource: w.UsageSource.v, Created: created,
		Usage: Usage{PromptTokens: *w.Usage.PromptTokens, CompletionTokens: *w.Usage.CompletionTokens, TotalTokens: *w.Usage.TotalTokens},
	}
	if err := oracleDigest(w.RequestSHA256, &out.RequestSHA256); err != nil {
		return Receipt{}, err
	}
	if err := oracleDigest(w.ResponseSHA256, &out.ResponseSHA256); err != nil {
		return Receipt{}, err
	}
	return out, out.Validate()
}

func oracleDigest(s string, out *[32]byte) error {
	if !isHexID(s) {
		return ErrMalformed
	}
	_, err := hex.Decode(out[:], []byte(s))
	return err
}

// TestReceiptDecodeLenient: what the decoder must keep accepting, because
// the signature is over the canonical re-encoding and not the bytes:
// whitespace, member order, and any JSON escape. Each input decodes to the
// original receipt.
func TestReceiptDecodeLenient(t *testing.T) {
	f := newFixture(t)
	r := f.r
	r.Model = "mod/el é 😀 \"q\" \\ \t\x01"
	r.Nonce = "n"
	sr := signReceipt(f.k.sign, r)
	env := string(sr.AppendJSON(nil))
	tests := []struct{ name, in string }{
		{"canonical", env},
		{"whitespace", " {\n\t\"receipt\" : " + strings.ReplaceAll(string(sr.Receipt.AppendCanonical(nil)), ",", " ,\r\n ") +
			" , \"signature\":\"" + env[strings.Index(env, `"signature":"`)+13:]},
		{"member order", strings.Replace(strings.Replace(env, `"created":`, `"version":2,"created":`, 1), `,"version":2}`, `}`, 1)},
		{"escaped key", strings.Replace(env, `"model":`, `"\u006dodel":`, 1)},
		{"escaped ascii", strings.Replace(env, `"model":"mod`, `"model":"\u006d\u006Fd`, 1)},
		{"escaped slash", strings.Replace(env, `"model":"mod/`, `"model":"mod\/`, 1)},
		{"escaped non-ascii", strings.Replace(env, `é`, `\u00e9`, 1)},
		{"surrogate pair", strings.Replace(env, `😀`, `\ud83d\ude00`, 1)},
		{"short escape as \\u", strings.Replace(env, `\t`, `\u0009`, 1)},
		{"escaped hex digest", strings.Replace(env, `"request_sha256":"`, `"request_sha256":"\u0030`, 1)},
	}
	// Escaping the first digest digit only works if that digit is a 0.
	if !strings.Contains(env, `"request_sha256":"0`) {
		tests = tests[:len(tests)-1]
	} else {
		tests[len(tests)-1].in = strings.Replace(env, `"request_sha256":"0`, `"request_sha256":"\u0030`, 1)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got SignedReceipt
			if err := got.UnmarshalJSON([]byte(tt.in)); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(&got, sr) {
				t.Fatalf("decoded\n%+v\nwant\n%+v", got, *sr)
			}
			if err := VerifyReceipt(&got, f.ev, nil, ReceiptCheck{Request: testRequest, Response: testResponse}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestReceiptDecodeStrict: every rule of docs/attestation.md §1 and §7 that
// a JSON decoder could let through fails with the error named, one change
// at a time. Those marked "was lenient" were accepted by the earlier
// encoding/json decoder. As before, a batch proof that is not well-typed
// JSON is ErrMalformed; one that is but lacks a member or holds a bad
// digest is ErrBatchProof too.
func TestReceiptDecodeStrict(t *testing.T) {
	f := newFixture(t)
	srs, _ := f.fresh(t, 3)
	sr := srs[1]
	env := string(sr.AppendJSON(nil))
	body := string(sr.Receipt.AppendCanonical(nil))
	sig := env[strings.Index(env, `"signature":"`)+13 : len(env)-2]
	rep := func(old, new string) string {
		if !strings.Contains(env, old) {
			t.Fatalf("fixture lacks %q", old)
		}
		return strings.Replace(env, old, new, 1)
	}
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"not JSON", "x", ErrMalformed},
		{"array", "[]", ErrMalformed},
		{"null", "null", ErrMalformed},
		{"trailing data", env + "{}", ErrMalformed},
		{"trailing comma", rep(`,"signature"`, `,,"signature"`), ErrMalformed},
		{"comma before brace", strings.TrimSuffix(env, "}") + ",}", ErrMalformed},
		{"missing colon", rep(`"receipt":`, `"receipt"`), ErrMalformed},
		{"unterminated", env[:len(env)-3], ErrMalformed},
		{"unknown member", rep(`"signature"`, `"x":1,"signature"`), ErrMalformed},
		{"unknown receipt member", rep(`"stream"`, `"x":1,"stream"`), ErrMalformed},
		{"unknown usage member", rep(`"total_tokens"`, `"x":1,"total_tokens"`), ErrMalformed},
		{"unknown batch member", rep(`"leaf_index"`, `"x":1,"leaf_index"`), ErrMalformed},
		{"missing receipt", `{"signature":"` + sig + `"}`, ErrMalformed},
		{"missing signature", `{"receipt":` + body + `}`, ErrMalformed},
		{"missing model", rep(`"model":"builtin",`, ``), ErrMalformed},
		{"missing usage member", rep(`"prompt_tokens":9,`, ``), ErrMalformed},
		{"missing stream", rep(`"stream":false,`, ``), ErrMalformed},
		{"missing version", rep(`,"version":2`, ``), ErrUnsupportedVersion},
		{"missing leaf index", rep(`"leaf_index":1,`, ``), ErrBatchProof},
		{"version 1 (refused by name)", rep(`"version":2`, `"version":1`), ErrUnsupportedVersion},
		{"version 3", rep(`"version":2`, `"version":3`), ErrUnsupportedVersion},
		{"version 2.0", rep(`"version":2`, `"version":2.0`), ErrMalformed},
		{"version 2e0", rep(`"version":2`, `"version":2e0`), ErrMalformed},
		{"version string", rep(`"version":2`, `"version":"2"`), ErrMalformed},
		{"version over 2^53-1", rep(`"version":2`, `"version":9007199254740992`), ErrMalformed},
		{"usage negative", rep(`"prompt_tokens":9`, `"prompt_tokens":-9`), ErrMalformed},
		{"usage -0 (was lenient)", rep(`"prompt_tokens":9`, `"prompt_tokens":-0`), ErrMalformed},
		{"usage leading zero", rep(`"prompt_tokens":9`, `"prompt_tokens":09`), ErrMalformed},
		{"usage over 2^53-1", rep(`"prompt_tokens":9`, `"prompt_tokens":9007199254740992`), ErrMalformed},
		{"usage 2^64", rep(`"prompt_tokens":9`, `"prompt_tokens":18446744073709551616`), ErrMalformed},
		{"stream null", rep(`"stream":false`, `"stream":null`), ErrMalformed},
		{"stream 0", rep(`"stream":false`, `"stream":0`), ErrMalformed},
		{"stream falsey", rep(`"stream":false`, `"stream":falsey`), ErrMalformed},
		{"usage null", rep(`"usage":{"completion_tokens":2,"prompt_tokens":9,"total_tokens":11}`, `"usage":null`), ErrMalformed},
		{"receipt null", `{"receipt":null,"signature":"` + sig + `"}`, ErrMalformed},
		{"model null", rep(`"model":"builtin"`, `"model":null`), ErrMalformed},
		{"nonce null", rep(`"nonce":"n-b"`, `"nonce":null`), ErrMalformed},
		{"nonce empty", rep(`"nonce":"n-b"`, `"nonce":""`), ErrMalformed},
		{"batch null (was lenient)", rep(env[:strings.Index(env, `"receipt"`)], `{"batch":null,`), ErrMalformed},
		{"proof null (was lenient)", rep(env[strings.Index(env, `"proof":`):strings.Index(env, `,"root"`)], `"proof":null`), ErrMalformed},
		{"proof missing (was lenient)", rep(env[strings.Index(env, `"proof":`):strings.Index(env, `,"root"`)+1], ``), ErrBatchProof},
		{"proof entry not hex", rep(`"proof":["`, `"proof":["x`), ErrBatchProof},
		{"proof entry number", rep(`"proof":[`, `"proof":[1,`), ErrMalformed},
		{"leaf index negative", rep(`"leaf_index":1`, `"leaf_index":-1`), ErrMalformed},
		{"repeated member (was lenient)", rep(`"signature"`, `"receipt":`+body+`,"signature"`), ErrMalformed},
		{"repeated receipt member (was lenient)", rep(`"model":"builtin"`, `"model":"x","model":"builtin"`), ErrMalformed},
		{"repeated usage member (was lenient)", rep(`"prompt_tokens":9`, `"prompt_tokens":1,"prompt_tokens":9`), ErrMalformed},
		{"repeated batch member (was lenient)", rep(`"leaf_index":1`, `"leaf_index":0,"leaf_index":1`), ErrMalformed},
		{"key in other case (was lenient)", rep(`"model":`, `"Model":`), ErrMalformed},
		{"envelope key in other case (was lenient)", rep(`"signature":`, `"SIGNATURE":`), ErrMalformed},
		{"invalid UTF-8 (was lenient)", rep(`"model":"builtin"`, "\"model\":\"built\xffin\""), ErrMalformed},
		{"UTF-8 surrogate (was lenient)", rep(`"model":"builtin"`, "\"model\":\"built\xed\xa0\x80in\""), ErrMalformed},
		{"lone high surrogate (was lenient)", rep(`"model":"builtin"`, `"model":"built\ud83din"`), ErrMalformed},
		{"lone low surrogate (was lenient)", rep(`"model":"builtin"`, `"model":"built\ude00in"`), ErrMalformed},
		{"reversed surrogates (was lenient)", rep(`"model":"builtin"`, `"model":"\ude00\ud83d"`), ErrMalformed},
		{"raw control character", rep(`"model":"builtin"`, "\"model\":\"built\nin\""), ErrMalformed},
		{"bad escape", rep(`"model":"builtin"`, `"model":"built\xin"`), ErrMalformed},
		{"short \\u escape", rep(`"model":"builtin"`, `"model":"built\u00"`), ErrMalformed},
		{"uppercase hex", rep(`"request_sha256":"`, `"request_sha256":"A`), ErrMalformed},
		{"short digest", rep(`"request_sha256":"`, `"request_sha256":"0`), ErrMalformed},
		{"signature padded", rep(sig, sig+"=="), ErrMalformed},
		{"signature with escaped LF", rep(sig, sig[:40]+`\n`+sig[40:]), ErrMalformed},
		{"signature of 63 bytes", rep(sig, sig[:84]), ErrMalformed},
		{"signature trailing bits", rep(sig, sig[:85]+"B"), ErrMalformed},
		{"created with offset", rep(`Z"`, `+00:00"`), ErrMalformed},
		{"created fractional second (was lenient)", rep(`Z"`, `.5Z"`), ErrMalformed},
		{"created one-digit hour (was lenient)", rep(`T10:`, `T1:`), ErrMalformed},
		{"created hour 24", rep(`T10:`, `T24:`), ErrMalformed},
		{"created second 60", rep(`:00Z"`, `:60Z"`), ErrMalformed},
		{"created February 30", rep(`-11-27T`, `-02-30T`), ErrMalformed},
		{"created lowercase t", rep(`-27T`, `-27t`), ErrMalformed},
		{"created year 1999", rep(`"created":"2026`, `"created":"1999`), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got SignedReceipt
			err := got.UnmarshalJSON([]byte(tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if _, err := ParseReceipt([]byte(tt.in)); err == nil {
				t.Fatal("ParseReceipt accepted it")
			}
		})
	}
	// The fixture time has zero seconds, which the cases above rely on.
	if !strings.Contains(env, `:00Z"`) || !strings.Contains(env, `T10:`) || !strings.Contains(env, `-11-27T`) {
		t.Fatal("fixture time changed")
	}
}

// TestReceiptDecodeMatchesOracle: on the test inputs above the new decoder
// accepts only what the earlier one accepted, with the same result.
func TestReceiptDecodeMatchesOracle(t *testing.T) {
	f := newFixture(t)
	srs, _ := f.fresh(t, 3)
	for _, sr := range []*SignedReceipt{srs[0], signReceipt(f.k.sign, f.r)} {
		env := sr.AppendJSON(nil)
		for i := range env {
			for _, b := range []byte{env[i] ^ 1, ' ', '"', '\\', '0', '-', 'e', '}'} {
				mut := bytes.Clone(env)
				mut[i] = b
				checkAgainstOracle(t, mut)
			}
			checkAgainstOracle(t, append(bytes.Clone(env[:i]), env[i+1:]...))
		}
	}
}

func checkAgainstOracle(t *testing.T, in []byte) {
	t.Helper()
	var got SignedReceipt
	err := got.UnmarshalJSON(in)
	if err != nil {
		if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupportedVersion) && !errors.Is(err, ErrBatchProof) {
			t.Fatalf("untyped error for %q: %v", in, err)
		}
		return
	}
	want, oerr := oracleSignedReceipt(in)
	if oerr != nil {
		t.Fatalf("accepted what the encoding/json decoder refuses (%v): %q", oerr, in)
	}
	if !reflect.DeepEqual(&got, want) {
		t.Fatalf("decoded differently from the encoding/json decoder: %q\n%+v\n%+v", in, got, *want)
	}
}

// FuzzReceiptDecodeOracle: the hand-written decoder never accepts what the
// encoding/json one refused, never reads it differently, and its errors are
// typed.
func FuzzReceiptDecodeOracle(f *testing.F) {
	fx := newFixture(f)
	srs, _ := fx.fresh(f, 3)
	f.Add(srs[0].AppendJSON(nil))
	f.Add(signReceipt(fx.k.sign, fx.r).AppendJSON(nil))
	for _, name := range []string{"receipt.envelope.json", "fresh.envelope.json"} {
		if b, err := readVector(name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"receipt":{"model":"\ud83d\ude00\u00e9\/"},"signature":""}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		checkAgainstOracle(t, in)
	})
}

// TestParseReceiptHeaderMatches: ParseReceiptHeader gives what ParseReceipt
// gives, for every delivery form and for broken ones.
func TestParseReceiptHeaderMatches(t *testing.T) {
	f := newFixture(t)
	srs, _ := f.fresh(t, 3)
	sr := srs[2]
	hv := sr.HeaderValue()
	env := sr.AppendJSON(nil)
	chunk := AppendReceiptChunk(nil, ChunkMeta{ID: "c", Object: "chat.completion.chunk"}, sr, f.ev.Raw)
	b64 := base64.RawURLEncoding.EncodeToString
	inputs := map[string]string{
		"header":              hv,
		"header with CRLF":    hv + "\r\n",
		"header in spaces":    "  " + hv + "\t",
		"envelope":            string(env),
		"chunk":               string(chunk),
		"data line":           "data: " + string(chunk),
		"base64 chunk":        b64(chunk),
		"base64 spaced env":   b64(append([]byte(" "), env...)),
		"base64 garbage":      b64([]byte("{\"receipt\":x")),
		"LF inside":           hv[:10] + "\n" + hv[10:],
		"padding":             hv + "=",
		"not base64":          "!!!",
		"empty":               "",
		"spaces":              "   ",
		"flipped last":        hv[:len(hv)-1] + "B",
		"too large":           strings.Repeat("A", MaxReceiptSize+1),
		"too large trimmable": hv + strings.Repeat(" ", MaxReceiptSize),
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			got, gerr := ParseReceiptHeader(in)
			want, werr := ParseReceipt([]byte(in))
			if (gerr == nil) != (werr == nil) || !reflect.DeepEqual(got, want) {
				t.Fatalf("ParseReceiptHeader: %v, %v; ParseReceipt: %v, %v", got, gerr, want, werr)
			}
			if gerr != nil && !errors.Is(gerr, ErrMalformed) {
				t.Fatalf("untyped error: %v", gerr)
			}
		})
	}
}

// TestTimeCodec: appendTime writes what Time.AppendFormat does, and
// parseTime reads back what it wrote and refuses what time.Parse refuses.
func TestTimeCodec(t *testing.T) {
	east := time.FixedZone("east", 5*3600+1800)
	times := []time.Time{
		time.Date(2026, 11, 27, 10, 0, 5, 0, time.UTC),
		time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(2024, 2, 29, 12, 30, 45, 123, east),
		time.Date(2100, 3, 1, 1, 2, 3, 0, time.UTC),
		time.Date(7, 1, 2, 3, 4, 5, 0, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-5, 6, 7, 8, 9, 10, 0, time.UTC),
		{},
	}
	for d := time.Duration(0); d < 400*24*time.Hour; d += 37*time.Hour + 11*time.Minute + 13*time.Second {
		times = append(times, time.Date(2027, 12, 1, 0, 0, 0, 0, time.UTC).Add(d))
	}
	for _, tm := range times {
		got := string(appendTime(nil, tm))
		want := tm.UTC().Format(TimeLayout)
		if got != want {
			t.Fatalf("appendTime(%v) = %q, want %q", tm, got, want)
		}
		if tm.UTC().Year() < 0 || tm.UTC().Year() > 9999 {
			continue
		}
		back, err := parseTime(got)
		if err != nil || !back.Equal(tm.UTC().Truncate(time.Second)) || back.Location() != time.UTC {
			t.Fatalf("parseTime(%q) = %v, %v", got, back, err)
		}
		if ref, _ := time.Parse(TimeLayout, got); !reflect.DeepEqual(back, ref) {
			t.Fatalf("parseTime(%q) = %#v, time.Parse gives %#v", got, back, ref)
		}
	}
	for _, s := range []string{
		"2026-02-29T00:00:00Z", "2100-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-13-01T00:00:00Z",
		"2026-00-01T00:00:00Z", "2026-01-00T00:00:00Z", "2026-01-01T24:00:00Z", "2026-01-01T00:60:00Z",
		"2026-01-01T00:00:60Z", "2026-01-01T00:00:00z", "2026-01-01 00:00:00Z", "2026-01-01T00:00:0aZ",
		"+026-01-01T00:00:00Z", "2026-01-01T00:00:00", "2026-01-01T00:00:00.0Z", "2026-1-01T00:00:00Z",
	} {
		if _, err := parseTime(s); !errors.Is(err, ErrMalformed) {
			t.Fatalf("parseTime(%q): %v", s, err)
		}
	}
}

// TestPrintableASCII checks the word-at-a-time test against the plain
// one for every byte value at every position of a 16-byte string.
func TestPrintableASCII(t *testing.T) {
	base := []byte("abcdefghijklmnopq")
	for n := 0; n <= len(base); n++ {
		for pos := 0; pos < n; pos++ {
			for c := 0; c < 256; c++ {
				s := bytes.Clone(base[:n])
				s[pos] = byte(c)
				want := c >= 0x20 && c < 0x80
				if got := printableASCII(string(s)); got != want {
					t.Fatalf("printableASCII(%q) = %t", s, got)
				}
			}
		}
	}
}

// TestDecodeBase64URLString: the chunked decoder agrees with
// DecodeBase64URL on lengths around its chunk size and on broken input at
// any position, including the chunk boundaries.
func TestDecodeBase64URLString(t *testing.T) {
	data := make([]byte, 3000)
	for i := range data {
		data[i] = byte(i*7 + i/5)
	}
	var inputs []string
	for _, n := range []int{0, 1, 2, 3, 64, 500, 765, 766, 767, 768, 769, 770, 1535, 1536, 1537, 2304, 3000} {
		enc := base64.RawURLEncoding.EncodeToString(data[:n])
		inputs = append(inputs, enc, enc+"A", enc+"=", enc+"\n")
		for _, pos := range []int{0, 1, 1023, 1024, 1025, 2047, 2048, len(enc) - 1} {
			if pos < 0 || pos >= len(enc) {
				continue
			}
			for _, c := range []byte{'+', '/', '=', '\r', '.', 'B'} {
				b := []byte(enc)
				b[pos] = c
				inputs = append(inputs, string(b))
			}
		}
	}
	for _, in := range inputs {
		got, gerr := decodeBase64URLString(in)
		want, werr := DecodeBase64URL(in)
		if (gerr == nil) != (werr == nil) || got != string(want) {
			t.Fatalf("len %d: got %v, want %v", len(in), gerr, werr)
		}
		if gerr != nil && !errors.Is(gerr, ErrMalformed) {
			t.Fatalf("untyped error: %v", gerr)
		}
	}
}

func FuzzDecodeBase64URLString(f *testing.F) {
	if b, err := readVector("receipt.header.txt"); err == nil {
		f.Add(string(bytes.TrimSpace(b)))
	}
	f.Add("AAE")
	f.Add("AA\nE")
	f.Fuzz(func(t *testing.T, in string) {
		got, gerr := decodeBase64URLString(in)
		want, werr := DecodeBase64URL(in)
		if (gerr == nil) != (werr == nil) || got != string(want) {
			t.Fatalf("got %v, want %v", gerr, werr)
		}
		var sig [64]byte
		n, serr := decodeSignature(in, &sig)
		if (serr == nil) != (werr == nil) || (serr == nil && (n != len(want) || (n <= 64 && !bytes.Equal(sig[:n], want)))) {
			t.Fatalf("decodeSignature: %d, %v; want %d bytes, %v", n, serr, len(want), werr)
		}
	})
}
