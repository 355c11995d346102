package browserverify

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/teegate/teegate/internal/stacktest"
)

func fetch(t *testing.T, method, url, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+stacktest.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	return resp, string(b)
}

func flip(s string, i int) string {
	b := []byte(s)
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

func statuses(r *Report) map[string]string {
	m := map[string]string{}
	for _, s := range r.Steps {
		m[s.Name] = s.Status
	}
	return m
}

// One real answer from a stack, verified as the page does, then broken one
// piece at a time: each failure is named by the step (and the CLI's cause)
// that catches it, and the steps after it are not reached.
func TestVerifyReceiptSteps(t *testing.T) {
	s := stacktest.Start(t)
	body := `{"model":"teegate-builtin","messages":[{"role":"user","content":"Hello"}],"max_tokens":6}`
	resp, out := fetch(t, "POST", s.URL+"/v1/chat/completions", body)
	header := resp.Header.Get("Teegate-Receipt")
	var sr struct {
		Receipt struct {
			EvidenceID string `json:"evidence_id"`
		} `json:"receipt"`
	}
	_, stored := fetch(t, "GET", s.URL+"/v1/attestation/receipts/"+resp.Header.Get("x-request-id"), "")
	if err := json.Unmarshal([]byte(stored), &sr); err != nil {
		t.Fatal(err)
	}
	_, evidence := fetch(t, "GET", s.URL+"/v1/attestation/evidence/"+sr.Receipt.EvidenceID, "")
	good := Input{Receipt: stored, Evidence: evidence, Request: body, Response: out, AllowSimulated: true, Policy: "dev"}

	ctx := context.Background()
	r := VerifyReceipt(ctx, good)
	if !r.Verified || r.Error != "" || r.Claims == nil || !r.Claims.Simulated {
		t.Fatalf("good receipt: %+v", r)
	}
	for _, st := range r.Steps {
		if st.Status != StatusOK {
			t.Errorf("step %s: %s", st.Name, st.Status)
		}
	}
	// The header form verifies too.
	hdr := good
	hdr.Receipt = header
	if r := VerifyReceipt(ctx, hdr); !r.Verified {
		t.Fatalf("header receipt: %+v", r)
	}

	sigAt := strings.Index(stored, `"signature":"`) + len(`"signature":"`) + 5
	cases := []struct {
		name  string
		mod   func(Input) Input
		step  string
		cause string
	}{
		{"malformed receipt", func(in Input) Input { in.Receipt = "{}"; return in }, StepReceipt, "receipt"},
		{"simulated not accepted", func(in Input) Input { in.AllowSimulated = false; return in }, StepEvidence, "evidence"},
		{"evidence byte", func(in Input) Input { in.Evidence = flip(in.Evidence, len(in.Evidence)/2); return in }, StepEvidence, "evidence"},
		{"signature byte", func(in Input) Input { in.Receipt = flip(in.Receipt, sigAt); return in }, StepSignature, "signature"},
		{"response byte", func(in Input) Input { in.Response = strings.Replace(in.Response, `"`, `'`, 1); return in }, StepHashes, "response hash"},
		{"request byte", func(in Input) Input { in.Request = strings.Replace(in.Request, "Hello", "Hellp", 1); return in }, StepHashes, "request hash"},
		{"production policy", func(in Input) Input { in.Policy = "production"; return in }, StepPolicy, "policy"},
		{"unknown policy", func(in Input) Input { in.Policy = "/etc/passwd"; return in }, StepPolicy, "policy"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := VerifyReceipt(ctx, tc.mod(good))
			if r.Verified || r.Cause != tc.cause || !strings.HasPrefix(r.Error, tc.cause+": ") {
				t.Fatalf("cause %q error %q, want cause %q", r.Cause, r.Error, tc.cause)
			}
			st := statuses(r)
			if st[tc.step] != StatusFailed {
				t.Fatalf("steps %v, want %s failed", st, tc.step)
			}
			after := false
			for _, s := range r.Steps {
				switch {
				case s.Name == tc.step:
					after = true
				case after && s.Status != StatusNotReached:
					t.Errorf("step %s after the failure: %s", s.Name, s.Status)
				case !after && s.Status != StatusOK:
					t.Errorf("step %s before the failure: %s", s.Name, s.Status)
				}
			}
		})
	}

	// Without the bytes: everything but the hashes is checked.
	nob := good
	nob.Request, nob.Response = "", ""
	r = VerifyReceipt(ctx, nob)
	if r.Verified || r.Error != "" || statuses(r)[StepHashes] != StatusSkipped || statuses(r)[StepSignature] != StatusOK || statuses(r)[StepPolicy] != StatusOK {
		t.Fatalf("without bytes: %+v", r)
	}
	nob.Receipt = flip(nob.Receipt, sigAt)
	if r := VerifyReceipt(ctx, nob); r.Cause != "signature" || statuses(r)[StepSignature] != StatusFailed {
		t.Fatalf("without bytes, bad signature: %+v", r)
	}

	ev := VerifyEvidence(ctx, evidence, true)
	if !ev.OK || ev.EvidenceID != sr.Receipt.EvidenceID || ev.Claims.TEE != "simulated" {
		t.Fatalf("evidence: %+v", ev)
	}
	if ev := VerifyEvidence(ctx, evidence, false); ev.OK || ev.Cause != "evidence" || !strings.Contains(ev.Error, "simulated") {
		t.Fatalf("evidence without simulated: %+v", ev)
	}
	if ev := VerifyEvidence(ctx, "not a bundle", true); ev.OK {
		t.Fatal("garbage evidence verified")
	}
}
