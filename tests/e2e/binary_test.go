package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/teegate/teegate/internal/proctest"
	"github.com/teegate/teegate/internal/stacktest"
)

// buildTeegate builds cmd/teegate once per test binary run.
var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func teegateBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "teegate-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "teegate")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/teegate/teegate/cmd/teegate").CombinedOutput()
		if err != nil {
			buildErr = &buildError{out: string(out), err: err}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return "building teegate: " + e.err.Error() + "\n" + e.out }

// devProcess runs `teegate dev` and returns its address and stdout so far.
type devProcess struct {
	cmd    *exec.Cmd
	stdout *proctest.Buffer
	addr   string
}

func startDev(t *testing.T, args ...string) *devProcess {
	t.Helper()
	addr := proctest.FreeAddr(t)
	all := append([]string{"dev", "--addr", addr, "--data-dir", t.TempDir(), "--log-level", "debug"}, args...)
	cmd := exec.Command(teegateBinary(t), all...)
	out := &proctest.Buffer{}
	var stderr proctest.Buffer
	cmd.Stdout, cmd.Stderr = out, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &devProcess{cmd: cmd, stdout: out, addr: addr}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if t.Failed() {
			t.Logf("stdout:\n%s\nstderr:\n%s", out.String(), stderr.String())
		}
		checkNoContentInLogs(t, stderr.String())
	})
	stacktest.Eventually(t, 60*time.Second, func() bool { return strings.Contains(out.String(), "Press Ctrl-C") }, "teegate dev banner")
	return p
}

func (p *devProcess) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("teegate dev exited with %v", err)
	}
}

// secretWords appear only in prompts of these tests; logs must never show them.
const secretWord = "zanzibarquokka"

func checkNoContentInLogs(t *testing.T, logs string) {
	if strings.Contains(logs, secretWord) {
		t.Errorf("prompt text leaked into the logs")
	}
}

// postTooLarge announces a body of n bytes on a raw connection, sends only
// its start and reads the answer: a server refuses an oversized body from
// its Content-Length, and a client still writing megabytes would race the
// server's close.
func postTooLarge(t *testing.T, addr, key string, n int) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"model\":", addr, key, n)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// The checklist, against the real binary.
func TestDevBinaryContract(t *testing.T) {
	p := startDev(t, "--api-key", "sk-test")
	base := "http://" + p.addr
	chat := `{"model":"teegate-builtin","messages":[{"role":"user","content":"Tell me about ` + secretWord + ` lighthouses."}],"max_tokens":16}`

	resp, body := post(t, base+"/v1/chat/completions", "sk-test", chat)
	var cc struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
		Usage struct {
			TotalTokens int `json:"total_tokens"`
		} `json:"usage"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &cc) != nil || len(cc.Choices) == 0 || cc.Choices[0].Message.Content == "" || cc.Usage.TotalTokens <= 0 {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}

	resp, body = post(t, base+"/v1/chat/completions", "sk-test", strings.Replace(chat, `"max_tokens":16`, `"max_tokens":16,"stream":true`, 1))
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") || !strings.HasSuffix(string(body), "data: [DONE]\n\n") {
		t.Fatalf("stream: %d %q …%q", resp.StatusCode, resp.Header.Get("Content-Type"), body[max(0, len(body)-40):])
	}

	checkError := func(name string, resp *http.Response, body []byte, status int, field, want string) {
		t.Helper()
		var e struct {
			Error map[string]any `json:"error"`
		}
		if resp.StatusCode != status || json.Unmarshal(body, &e) != nil || e.Error == nil {
			t.Fatalf("%s: %d %s", name, resp.StatusCode, body)
		}
		if field != "" && e.Error[field] != want {
			t.Fatalf("%s: error.%s = %v, want %s", name, field, e.Error[field], want)
		}
		if resp.Header.Get("x-request-id") == "" {
			t.Fatalf("%s: no x-request-id", name)
		}
	}
	resp, body = post(t, base+"/v1/chat/completions", "sk-test", strings.Replace(chat, "teegate-builtin", "no-such-model", 1))
	checkError("unknown model", resp, body, 404, "code", "model_not_found")
	resp, body = post(t, base+"/v1/chat/completions", "sk-test", `{"model": "teegate-builtin", "messages": [`)
	checkError("malformed JSON", resp, body, 400, "type", "invalid_request_error")
	resp, body = post(t, base+"/v1/chat/completions", "", chat)
	checkError("missing key", resp, body, 401, "", "")
	resp, body = post(t, base+"/v1/chat/completions", "sk-wrong", chat)
	checkError("wrong key", resp, body, 401, "code", "invalid_api_key")
	resp, body = postTooLarge(t, p.addr, "sk-test", 5<<20)
	checkError("too large", resp, body, 413, "type", "invalid_request_error")

	// Still healthy after all of that.
	resp, body = post(t, base+"/v1/chat/completions", "sk-test", chat)
	if resp.StatusCode != 200 {
		t.Fatalf("after errors: %d %s", resp.StatusCode, body)
	}
	p.stop(t)
}

// Without --api-key, dev generates a key once, stores it, prints it with a
// curl line that works as printed, and prints the same key after a restart.
func TestDevBinaryPrintsWorkingCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is required for this test (apt-get install curl)")
	}
	dataDir := t.TempDir()
	p := startDev(t, "--data-dir", dataDir)
	out := p.stdout.String()
	key := regexp.MustCompile(`API key:\s+(\S+)`).FindStringSubmatch(out)
	if key == nil || !strings.HasPrefix(key[1], "sk-") {
		t.Fatalf("no API key in banner:\n%s", out)
	}
	if !regexp.MustCompile(`NATS:\s+nats://127\.0\.0\.1:\d+`).MatchString(out) {
		t.Fatalf("no NATS URL in banner:\n%s", out)
	}
	var curlLine string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); strings.HasPrefix(l, "curl ") && curlLine == "" {
			curlLine = l
		}
	}
	if curlLine == "" {
		t.Fatalf("no curl line in banner:\n%s", out)
	}
	res, err := exec.Command("sh", "-c", curlLine).Output()
	if err != nil {
		t.Fatalf("running the printed curl line: %v", err)
	}
	var cc struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	if json.Unmarshal(res, &cc) != nil || len(cc.Choices) == 0 || cc.Choices[0].Message.Content == "" {
		t.Fatalf("curl got %s", res)
	}
	// The printed verify lines work as printed, in a fresh folder.
	var verifyLines []string
	in := false
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "Verify an answer offline"):
			in = true
		case in && l == "":
			in = false
		case in:
			verifyLines = append(verifyLines, l)
		}
	}
	if len(verifyLines) < 3 {
		t.Fatalf("no verify lines in banner:\n%s", out)
	}
	sh := exec.Command("sh", "-e", "-c", strings.Join(verifyLines, "\n"))
	sh.Dir = t.TempDir()
	if vout, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("the printed verify lines failed: %v\n%s", err, vout)
	}
	p.stop(t)

	p2 := startDev(t, "--data-dir", dataDir)
	if !strings.Contains(p2.stdout.String(), key[1]) {
		t.Fatal("the generated key changed across restarts")
	}
	p2.stop(t)
}
