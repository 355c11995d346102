package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The check with the real binaries: an answer saved from
// `teegate dev` verifies with `teegate verify response`, and one changed
// byte in any input makes it fail with one line naming the cause.
func TestVerifyResponseCLIAgainstDev(t *testing.T) {
	p := startDev(t, "--api-key", "sk-test")
	base := "http://" + p.addr
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, stream := range []bool{false, true} {
		name := map[bool]string{false: "non-stream", true: "stream"}[stream]
		t.Run(name, func(t *testing.T) {
			reqBody := `{"model":"teegate-builtin","messages":[{"role":"user","content":"Tell me about rivers."}],"max_tokens":12}`
			if stream {
				reqBody = strings.Replace(reqBody, `"max_tokens":12`, `"max_tokens":12,"stream":true`, 1)
			}
			resp, body := post(t, base+"/v1/chat/completions", "sk-test", reqBody)
			if resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			evID := resp.Header.Get("Teegate-Evidence-Id")
			receipt := []byte(resp.Header.Get("Teegate-Receipt"))
			if stream {
				// The receipt is the final data event before [DONE].
				events := strings.Split(strings.TrimSpace(string(body)), "\n\n")
				last := strings.TrimPrefix(events[len(events)-2], "data: ")
				receipt = []byte(last)
				i := strings.Index(last, `"evidence_id":"`)
				evID = last[i+len(`"evidence_id":"`) : i+len(`"evidence_id":"`)+64]
			}
			_, evidence := getAs(t, base+"/v1/attestation/evidence/"+evID, "sk-test")
			files := map[string][]byte{"request": []byte(reqBody), "response": body, "receipt": receipt, "evidence": evidence}
			run := func(f map[string][]byte) (string, error) {
				args := []string{"verify", "response", "--allow-simulated",
					"--request", write("request", f["request"]), "--response", write("response", f["response"]),
					"--receipt", write("receipt", f["receipt"]), "--evidence", write("evidence", f["evidence"])}
				if stream {
					args = append(args, "--stream")
				}
				out, err := exec.Command(teegateBinary(t), args...).CombinedOutput()
				return string(out), err
			}
			if out, err := run(files); err != nil {
				t.Fatalf("genuine answer failed to verify: %v\n%s", err, out)
			}
			for _, part := range []string{"request", "response", "receipt", "evidence"} {
				orig := files[part]
				// Flip a byte inside a value, away from JSON structure.
				mutated := []byte(string(orig))
				i := len(mutated) / 2
				for mutated[i] == '"' || mutated[i] == ':' || mutated[i] == ',' || mutated[i] == '{' || mutated[i] == '}' || mutated[i] == '\n' {
					i++
				}
				mutated[i] ^= 0x01
				f := map[string][]byte{}
				for k, v := range files {
					f[k] = v
				}
				f[part] = mutated
				out, err := run(f)
				if err == nil {
					t.Fatalf("a changed byte of the %s verified:\n%s", part, out)
				}
				lines := strings.Split(strings.TrimSpace(out), "\n")
				if len(lines) != 1 || !strings.HasPrefix(lines[0], "teegate verify") {
					t.Fatalf("%s: want one line naming the failure, got:\n%s", part, out)
				}
				t.Logf("%s flipped: %s", part, lines[0])
			}
		})
	}
	p.stop(t)
}
