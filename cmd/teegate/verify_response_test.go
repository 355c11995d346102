package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/claims"
	"github.com/teegate/teegate/attest/client"
)

// The transcripts attest/client records from its fake gateway (real
// simulated TEE, Keeper and receipts) double as the files a client keeps.
const transcriptDir = "../../attest/client/testdata"

func loadTestTranscript(t *testing.T, name string) *client.Transcript {
	t.Helper()
	tr, err := client.LoadTranscript(filepath.Join(transcriptDir, name+".transcript.json"))
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// responseFiles writes a transcript out as the separate files of
// `verify response` and returns the flag values.
type responseFiles struct {
	request, response, receipt, evidence, fresh string
	// now is when the transcript was saved: golden files are verified as
	// of then, beyond the default maximum evidence age.
	now string
}

func writeResponseFiles(t *testing.T, tr *client.Transcript, receiptForm string) responseFiles {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	f := responseFiles{
		request:  write("request.json", tr.Request),
		response: write("response", tr.Response),
		evidence: write("evidence.json", tr.Evidence),
		now:      tr.Saved.UTC().Format(time.RFC3339),
	}
	switch receiptForm {
	case "header":
		f.receipt = write("receipt.txt", []byte(tr.Receipt.HeaderValue()+"\n"))
	case "chunk":
		f.receipt = write("receipt.txt", append([]byte("data: "), attest.AppendReceiptChunk(nil, attest.ChunkMeta{ID: "c", Object: "chat.completion.chunk", Model: "builtin"}, tr.Receipt, nil)...))
	}
	if tr.FreshEvidence != nil {
		f.fresh = write("fresh.json", tr.FreshEvidence)
	}
	return f
}

func (f responseFiles) args(extra ...string) []string {
	a := []string{"--request", f.request, "--response", f.response, "--evidence", f.evidence, "--now", f.now}
	if f.receipt != "" {
		a = append(a, "--receipt", f.receipt)
	}
	if f.fresh != "" {
		a = append(a, "--fresh-evidence", f.fresh)
	}
	return append(a, extra...)
}

// flipFile changes one byte of a file, after marker (or in the middle of
// the file when marker is ""), keeping JSON and base64 well formed.
func flipFile(t *testing.T, path, marker string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	j := len(b) / 2
	if marker != "" {
		i := bytes.Index(b, []byte(marker))
		if i < 0 {
			t.Fatalf("marker %q not in %s", marker, path)
		}
		j = i + len(marker)
	}
	switch c := b[j]; {
	case c >= '0' && c <= '8':
		b[j] = c + 1
	case c == 'A':
		b[j] = 'B'
	default:
		b[j] = 'A'
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyResponseValid(t *testing.T) {
	for _, tc := range []struct {
		name, transcript, receipt string
		extra                     []string
	}{
		{"unary header", "chat", "header", nil},
		{"unary json", "chat", "header", []string{"--json"}},
		{"stream receipt from stream", "stream", "", nil},
		{"stream receipt chunk", "stream", "chunk", []string{"--stream"}},
		{"fresh", "fresh", "header", nil},
		{"fresh stream", "fresh-stream", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := loadTestTranscript(t, tc.transcript)
			f := writeResponseFiles(t, tr, tc.receipt)
			extra := append([]string{"--allow-simulated"}, tc.extra...)
			if tr.Nonce != "" {
				extra = append(extra, "--nonce", tr.Nonce)
			}
			var out, errOut bytes.Buffer
			if err := runVerifyResponse(context.Background(), f.args(extra...), &out, &errOut); err != nil {
				t.Fatalf("valid answer rejected: %v", err)
			}
			if !strings.Contains(out.String(), tr.Receipt.Receipt.RequestID) {
				t.Fatalf("output %q", out.String())
			}
			if !strings.Contains(out.String(), "SIMULATED") && !strings.Contains(out.String(), `"simulated": true`) {
				t.Fatalf("simulated evidence not labeled: %q", out.String())
			}
		})
	}
}

func TestVerifyResponseFailures(t *testing.T) {
	denyAll := client.PolicyFunc(func(context.Context, *claims.Claims, time.Time) (bool, []string, error) {
		return false, []string{"tee simulated is not allowed"}, nil
	})
	for _, tc := range []struct {
		name, transcript, receipt string
		mutate                    func(t *testing.T, f responseFiles)
		extra                     []string
		policy                    client.Policy
		want                      error
		msg                       string
	}{
		{name: "request byte", transcript: "chat", receipt: "header", mutate: func(t *testing.T, f responseFiles) { flipFile(t, f.request, `"content":"`) },
			want: attest.ErrRequestHash, msg: "request hash"},
		{name: "response byte", transcript: "chat", receipt: "header", mutate: func(t *testing.T, f responseFiles) { flipFile(t, f.response, `"content":"`) },
			want: attest.ErrResponseHash, msg: "response hash"},
		{name: "stream byte", transcript: "stream", receipt: "", mutate: func(t *testing.T, f responseFiles) { flipFile(t, f.response, `"content":"`) },
			want: attest.ErrResponseHash, msg: "response hash"},
		{name: "receipt signature", transcript: "chat", receipt: "header", mutate: func(t *testing.T, f responseFiles) {
			// The header is base64url: flip a byte of the decoded envelope.
			b, _ := os.ReadFile(f.receipt)
			env, _ := base64.RawURLEncoding.DecodeString(strings.TrimSpace(string(b)))
			i := bytes.Index(env, []byte(`"request_id":"`)) + len(`"request_id":"`)
			env[i] ^= 1
			os.WriteFile(f.receipt, []byte(base64.RawURLEncoding.EncodeToString(env)), 0o600)
		}, want: attest.ErrReceiptSignature, msg: "signature"},
		{name: "receipt chunk byte", transcript: "stream", receipt: "chunk", mutate: func(t *testing.T, f responseFiles) { flipFile(t, f.receipt, `"signature":"`) },
			want: attest.ErrMalformed, msg: "receipt"},
		{name: "receipt garbage", transcript: "chat", receipt: "header", mutate: func(t *testing.T, f responseFiles) { flipFile(t, f.receipt, "") },
			want: attest.ErrMalformed, msg: "receipt"},
		{name: "evidence byte", transcript: "chat", receipt: "header", mutate: func(t *testing.T, f responseFiles) { flipFile(t, f.evidence, `"cpu_evidence":"`) },
			want: attest.ErrBundleSignature, msg: "evidence"},
		{name: "evidence quote signature", transcript: "chat", receipt: "header", mutate: func(t *testing.T, f responseFiles) { flipFile(t, f.evidence, `"signature":"`) },
			want: attest.ErrBundleSignature, msg: "evidence"},
		{name: "fresh evidence byte", transcript: "fresh", receipt: "header", mutate: func(t *testing.T, f responseFiles) { flipFile(t, f.fresh, `"epoch_nonce":"`) },
			want: attest.ErrBundleSignature, msg: "evidence"},
		{name: "other evidence", transcript: "chat", receipt: "header", mutate: func(t *testing.T, f responseFiles) {
			// A genuine bundle of the same worker, but not the one the
			// receipt names.
			b, _ := os.ReadFile(filepath.Join(transcriptDir, "fresh.transcript.json"))
			tr, _ := client.DecodeTranscript(b)
			os.WriteFile(f.evidence, tr.FreshEvidence, 0o600)
		}, want: attest.ErrEvidenceMismatch, msg: "evidence"},
		{name: "nonce", transcript: "fresh", receipt: "header", extra: []string{"--nonce", "not-the-nonce"},
			want: attest.ErrNonceMismatch, msg: "nonce"},
		{name: "missing fresh evidence", transcript: "fresh", receipt: "header", mutate: func(t *testing.T, f responseFiles) { os.WriteFile(f.fresh, nil, 0o600) },
			want: attest.ErrEvidenceMismatch, msg: "evidence"},
		{name: "simulated not allowed", transcript: "chat", receipt: "header", extra: []string{"--allow-simulated=false"},
			want: attest.ErrSimulatedNotAllowed, msg: "--allow-simulated"},
		{name: "policy", transcript: "chat", receipt: "header", extra: []string{"--policy", "deny.rego"}, policy: denyAll,
			want: client.ErrPolicy, msg: "policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := loadTestTranscript(t, tc.transcript)
			f := writeResponseFiles(t, tr, tc.receipt)
			if tc.mutate != nil {
				tc.mutate(t, f)
			}
			extra := tc.extra
			if tc.policy != nil {
				// A real Rego policy that denies everything, loaded the way
				// the CLI loads any policy file.
				path := filepath.Join(t.TempDir(), "deny.rego")
				if err := os.WriteFile(path, []byte(denyAllRego), 0o600); err != nil {
					t.Fatal(err)
				}
				extra = []string{"--policy", path}
			}
			args := append([]string{"--allow-simulated"}, extra...)
			if tr.Nonce != "" && !strings.Contains(strings.Join(extra, " "), "--nonce") {
				args = append(args, "--nonce", tr.Nonce)
			}
			var out, errOut bytes.Buffer
			err := runVerifyResponse(context.Background(), f.args(args...), &out, &errOut)
			if err == nil {
				t.Fatalf("mutated answer verified: %s", out.String())
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			t.Logf("teegate verify: %v", err)
			if msg := err.Error(); !strings.Contains(msg, tc.msg) || strings.Contains(msg, "\n") {
				t.Fatalf("message %q does not name %q on one line", msg, tc.msg)
			}
			if strings.Contains(err.Error(), "say hello") || strings.Contains(err.Error(), "enclave") {
				t.Fatal("prompt or completion text in the error")
			}
		})
	}
}

func TestVerifyTranscriptCommand(t *testing.T) {
	for _, name := range []string{"chat", "stream", "fresh", "fresh-stream"} {
		p := filepath.Join(transcriptDir, name+".transcript.json")
		now := "--now=" + loadTestTranscript(t, name).Saved.UTC().Format(time.RFC3339)
		for _, args := range [][]string{{p, "--allow-simulated", now}, {"--allow-simulated", now, p}, {"--json", now, "--allow-simulated", p}} {
			var out, errOut bytes.Buffer
			if err := runVerifyTranscript(context.Background(), args, &out, &errOut); err != nil {
				t.Fatalf("%s %v: %v", name, args, err)
			}
		}
	}
	// Tampered transcript: one byte of the response.
	tr := loadTestTranscript(t, "chat")
	tr.Response[len(tr.Response)/2] ^= 1
	p := filepath.Join(t.TempDir(), "t.json")
	if err := client.SaveTranscript(p, tr); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err := runVerifyTranscript(context.Background(), []string{p, "--allow-simulated", "--now=" + tr.Saved.UTC().Format(time.RFC3339)}, &out, &errOut)
	if !errors.Is(err, attest.ErrResponseHash) || !strings.HasPrefix(err.Error(), "response hash: ") {
		t.Fatalf("tampered transcript: %v", err)
	}
	if err := runVerifyTranscript(context.Background(), nil, &out, &errOut); !errors.Is(err, errUsage) {
		t.Fatalf("no file: %v", err)
	}
	if err := runVerifyTranscript(context.Background(), []string{filepath.Join(transcriptDir, "chat.transcript.json")}, &out, &errOut); !errors.Is(err, attest.ErrSimulatedNotAllowed) {
		t.Fatalf("simulated without --allow-simulated: %v", err)
	}
}

func TestVerifyResponseUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := runVerifyResponse(context.Background(), []string{"--request", "x"}, &out, &errOut); !errors.Is(err, errUsage) {
		t.Fatalf("missing --response: %v", err)
	}
	errOut.Reset()
	runVerifyResponse(context.Background(), []string{"-h"}, &out, &errOut)
	if !strings.Contains(errOut.String(), "--allow-simulated") || !strings.Contains(errOut.String(), "teegate dev") {
		t.Fatalf("help does not explain simulated evidence: %s", errOut.String())
	}
}

const denyAllRego = `package teegate.policy

deny contains "denied by the test policy" if { true }

allow if { count(deny) == 0 }
`
