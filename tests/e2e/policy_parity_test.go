package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/client"
	"github.com/teegate/teegate/gateway"
	"github.com/teegate/teegate/internal/stacktest"
	"github.com/teegate/teegate/policies"
)

// The same evidence under the same policy gets the same decision and the
// same reasons from the gateway's admission, the Go SDK and the verify CLI.
func TestPolicyDecisionIsTheSameEverywhere(t *testing.T) {
	s := stacktest.Start(t) // dev policy: the simulated worker serves
	const admin = "sk-admin-parity"
	if err := s.AddKey(context.Background(), admin, gateway.APIKey{Name: "admin", Tenant: "ops", Admin: true}); err != nil {
		t.Fatal(err)
	}
	reqBody := `{"model":"teegate-builtin","messages":[{"role":"user","content":"Tell me about soil."}],"max_tokens":8}`
	resp, respBody := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, reqBody)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, respBody)
	}
	receiptHdr := resp.Header.Get("Teegate-Receipt")
	sr, err := attest.ParseReceipt([]byte(receiptHdr))
	if err != nil {
		t.Fatal(err)
	}
	_, evidence := get(t, s.URL+"/v1/attestation/evidence/"+sr.Receipt.EvidenceID)

	prod, err := policies.Builtin("production")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The policy as a file, as an operator would hand it to each tool.
	rego, data, err := policies.BuiltinSource("production")
	if err != nil {
		t.Fatal(err)
	}
	policyPath := filepath.Join(dir, "prod.rego")
	_ = os.WriteFile(policyPath, rego, 0o600)
	_ = os.WriteFile(filepath.Join(dir, "prod.data.json"), data, 0o600)

	// 1. The Go SDK.
	_, sdkErr := client.VerifyTranscript(context.Background(), &client.Transcript{
		Version: client.TranscriptVersion, Endpoint: "/v1/chat/completions",
		Request: []byte(reqBody), Response: respBody, Receipt: sr, Evidence: evidence,
	}, client.Options{AllowSimulated: true, Policy: mustLoad(t, policyPath)})
	if !errors.Is(sdkErr, client.ErrPolicy) {
		t.Fatalf("SDK: %v, want a policy rejection", sdkErr)
	}
	sdkReasons := reasonsAfter(t, sdkErr.Error())

	// 2. The verify CLI.
	files := map[string][]byte{"request": []byte(reqBody), "response": respBody, "receipt": []byte(receiptHdr), "evidence": evidence}
	args := []string{"verify", "response", "--allow-simulated", "--policy", policyPath}
	for k, v := range files {
		p := filepath.Join(dir, k)
		_ = os.WriteFile(p, v, 0o600)
		args = append(args, "--"+k, p)
	}
	out, err := exec.Command(teegateBinary(t), args...).CombinedOutput()
	if err == nil {
		t.Fatalf("CLI accepted simulated evidence under production:\n%s", out)
	}
	cliReasons := reasonsAfter(t, strings.TrimSpace(string(out)))

	// 3. The gateway: switch its admission policy and read its decision.
	if err := s.SetPolicy(context.Background(), prod); err != nil {
		t.Fatal(err)
	}
	var gwReasons []string
	stacktest.Eventually(t, 20*time.Second, func() bool {
		r, body, err := send("GET", s.URL+"/v1/attestation/workers", admin, "")
		if err != nil || r.StatusCode != 200 {
			return false
		}
		var list struct {
			Data []struct {
				EvidenceID string   `json:"evidence_id"`
				Decision   string   `json:"decision"`
				Reasons    []string `json:"reasons"`
				Policy     string   `json:"policy"`
			} `json:"data"`
		}
		if json.Unmarshal(body, &list) != nil {
			return false
		}
		for _, d := range list.Data {
			if d.EvidenceID == sr.Receipt.EvidenceID && d.Decision == "refused" && strings.Contains(d.Policy, "production") {
				gwReasons = d.Reasons
				return true
			}
		}
		return false
	}, "the gateway's decision under the production policy")

	sort.Strings(sdkReasons)
	sort.Strings(cliReasons)
	sort.Strings(gwReasons)
	t.Logf("reasons: %q", gwReasons)
	if len(gwReasons) == 0 || strings.Join(sdkReasons, "\n") != strings.Join(gwReasons, "\n") || strings.Join(cliReasons, "\n") != strings.Join(gwReasons, "\n") {
		t.Fatalf("decisions differ:\n gateway %q\n sdk     %q\n cli     %q", gwReasons, sdkReasons, cliReasons)
	}
	if !strings.Contains(strings.Join(gwReasons, " "), "simulated") {
		t.Fatalf("no reason names simulated evidence: %q", gwReasons)
	}
}

func mustLoad(t *testing.T, path string) *policies.Policy {
	t.Helper()
	p, err := policies.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// reasonsAfter splits "…policy rejected the evidence: r1; r2" into reasons.
func reasonsAfter(t *testing.T, msg string) []string {
	t.Helper()
	const marker = "policy rejected the evidence: "
	i := strings.Index(msg, marker)
	if i < 0 {
		t.Fatalf("no policy reasons in %q", msg)
	}
	return strings.Split(msg[i+len(marker):], "; ")
}
