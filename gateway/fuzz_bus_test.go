package gateway

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/teegate/teegate/worker/wire"
)

// A worker's reply headers cross the bus, a trust boundary: the checks
// never panic, and whatever they accept is what the gateway may relay.
func FuzzCheckReplyHeaders(f *testing.F) {
	f.Add("", "", "", "", "", "req_1")
	f.Add("eyJhbGciOiJFZERTQSJ9", "", "ab12", "teegate-worker-0", "application/json", "req_1")
	f.Add("not base64!", "x", "zz", "bad worker", "text/html", "req_2")
	f.Add("", "", "", "", "application/json; charset=UTF-8", "")
	f.Add("", "", "", "", "application/json; charset=latin1; x=y", "")
	f.Add(strings.Repeat("A", 70000), "", "", "", "", "req_3")
	f.Fuzz(func(t *testing.T, receipt, evidence, evidenceID, worker, contentType, reqID string) {
		h := nats.Header{}
		for k, v := range map[string]string{wire.HdrReceipt: receipt, wire.HdrEvidence: evidence, wire.HdrEvidenceID: evidenceID,
			wire.HdrWorker: worker, wire.HdrContentType: contentType} {
			if v != "" {
				h.Set(k, v)
			}
		}
		if err := checkHeaders(h); err == nil {
			if !wire.IsBase64URL(h.Get(wire.HdrReceipt)) || !wire.IsBase64URL(h.Get(wire.HdrEvidence)) {
				t.Fatalf("accepted a receipt or evidence header that is not base64url")
			}
			if w := h.Get(wire.HdrWorker); w != "" && wire.Token(w) != w {
				t.Fatalf("accepted worker header %q", w)
			}
		} else if !errors.Is(err, errBadReply) {
			t.Fatalf("checkHeaders error not errBadReply: %v", err)
		}
		if ct, err := wire.ReplyContentType(h); err == nil {
			if ct != "application/json" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
				t.Fatalf("relays content type %q", ct)
			}
		} else if !errors.Is(err, errBadReply) {
			t.Fatalf("replyContentType error not errBadReply: %v", err)
		}
		if sr, err := checkReceipt(h, reqID); err == nil {
			if sr.Receipt.RequestID != reqID || sr.Receipt.Stream {
				t.Fatalf("accepted a receipt for %q (stream %t) as one for %q", sr.Receipt.RequestID, sr.Receipt.Stream, reqID)
			}
		} else if !errors.Is(err, errBadReply) {
			t.Fatalf("checkReceipt error not errBadReply: %v", err)
		}
	})
}

// Teegate-Nonce is client input copied into a NATS header and a receipt:
// accepted values are UTF-8 without control characters (no header or line
// injection).
func FuzzValidNonce(f *testing.F) {
	for _, s := range []string{"", "abc", "nonce-\r\nX-Evil: 1", "\xff\xfe", "ü", "\u0085", "tab\there"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, n string) {
		if !validNonce(n) {
			return
		}
		if !utf8.ValidString(n) {
			t.Fatalf("accepted invalid UTF-8 %q", n)
		}
		for _, r := range n {
			if unicode.IsControl(r) || r == '\r' || r == '\n' {
				t.Fatalf("accepted control character %U in %q", r, n)
			}
		}
	})
}
