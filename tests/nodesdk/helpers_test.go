package nodesdk

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/teegate/teegate/internal/stacktest"
)

// fetchEvidence gets a bundle as a client would: GET
// /v1/attestation/evidence/{id}.
func fetchEvidence(t *testing.T, base, id string) []byte {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/v1/attestation/evidence/"+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+stacktest.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("evidence %s: %d %v", id, resp.StatusCode, err)
	}
	return b
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// flipText changes the case of the first letter of the first text delta
// (or output text) in b, keeping the JSON valid.
func flipText(t *testing.T, b []byte) []byte {
	t.Helper()
	for _, key := range [][]byte{[]byte(`"delta":"`), []byte(`"text":"`)} {
		for off := 0; ; {
			i := bytes.Index(b[off:], key)
			if i < 0 {
				break
			}
			j := off + i + len(key)
			if c := b[j]; c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
				out := bytes.Clone(b)
				out[j] ^= 0x20
				return out
			}
			off = j
		}
	}
	t.Fatalf("no text to flip in %s", b)
	return nil
}
