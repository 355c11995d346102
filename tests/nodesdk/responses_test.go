package nodesdk

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/client"
	"github.com/teegate/teegate/internal/stacktest"
)

// The official Node SDK calls POST /v1/responses, non-stream and with
// stream: true (for await); tests/node/responses.test.mjs checks text,
// usage and events, and saves each exchange's exact bytes. Each then
// verifies with `teegate verify response` and with the Go SDK's verifier
// (client.VerifyTranscript, what the middleware runs), and fails with one
// flipped byte in the response.
func TestNodeSDKResponses(t *testing.T) {
	dir, err := filepath.Abs("../node")
	if err != nil {
		t.Fatal(err)
	}
	_, nodeErr := exec.LookPath("node")
	_, sdkErr := os.Stat(filepath.Join(dir, "node_modules", "openai"))
	if nodeErr != nil || sdkErr != nil {
		if os.Getenv("TEEGATE_REQUIRE_NODE") != "" {
			t.Fatalf("node or the openai npm package is missing (node: %v, sdk: %v); run `make node-deps`", nodeErr, sdkErr)
		}
		t.Skip("SKIPPED: node SDK tests need node and `make node-deps` (make test runs them)")
	}
	s := stacktest.Start(t)
	out := t.TempDir()
	cmd := exec.Command("node", "--test", "responses.test.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TEEGATE_BASE_URL="+s.URL+"/v1", "TEEGATE_API_KEY="+stacktest.APIKey,
		"TEEGATE_OUT_DIR="+out, "NODE_NO_WARNINGS=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("node responses tests failed: %v\n%s", err, b)
	}
	bin := filepath.Join(t.TempDir(), "teegate")
	if b, err := exec.Command("go", "build", "-o", bin, "../../cmd/teegate").CombinedOutput(); err != nil {
		t.Fatalf("building teegate: %v\n%s", err, b)
	}
	for _, name := range []string{"nonstream", "stream"} {
		read := func(ext string) []byte {
			b, err := os.ReadFile(filepath.Join(out, name+ext))
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		req, resp := read(".request"), read(".response")
		var h struct{ Receipt, EvidenceID, ContentType string }
		if err := json.Unmarshal(read(".headers.json"), &h); err != nil {
			t.Fatal(err)
		}
		tr := &client.Transcript{Version: client.TranscriptVersion, Endpoint: "/v1/responses", Request: req, Response: resp, Stream: name == "stream"}
		args := []string{"verify", "response", "--allow-simulated", "--request", filepath.Join(out, name+".request"), "--response", filepath.Join(out, name+".response")}
		if name == "stream" {
			args = append(args, "--stream")
			res, err := attest.DigestSSE(bytesReader(resp))
			if err != nil {
				t.Fatal(err)
			}
			tr.Receipt, tr.Evidence = res.Receipt, res.Evidence
		} else {
			sr, err := attest.ParseReceiptHeader(h.Receipt)
			if err != nil {
				t.Fatalf("non-stream receipt header: %v", err)
			}
			ev := fetchEvidence(t, s.URL, h.EvidenceID)
			tr.Receipt, tr.Evidence = sr, ev
			rp, ep := filepath.Join(out, "rcpt"), filepath.Join(out, "ev")
			if err := os.WriteFile(rp, []byte(h.Receipt), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(ep, ev, 0o600); err != nil {
				t.Fatal(err)
			}
			args = append(args, "--receipt", rp, "--evidence", ep)
		}
		res, err := client.VerifyTranscript(context.Background(), tr, client.Options{AllowSimulated: true})
		if err != nil || !res.Verified {
			t.Fatalf("%s: Go verifier: %v", name, err)
		}
		if b, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s: teegate verify response: %v\n%s", name, err, b)
		}
		// One flipped byte in the text the SDK read fails both.
		bad := flipText(t, resp)
		tr.Response = bad
		if _, err := client.VerifyTranscript(context.Background(), tr, client.Options{AllowSimulated: true}); err == nil {
			t.Fatalf("%s: flipped byte verified", name)
		}
		if err := os.WriteFile(filepath.Join(out, name+".response"), bad, 0o600); err != nil {
			t.Fatal(err)
		}
		if b, err := exec.Command(bin, args...).CombinedOutput(); err == nil {
			t.Fatalf("%s: CLI verified a flipped byte:\n%s", name, b)
		}
	}
}
