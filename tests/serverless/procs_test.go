package serverless

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/teegate/teegate/internal/proctest"
)

func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }

// proc is a child process; its cleanup kills and reaps it.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *proctest.Buffer
	done chan struct{}
	err  error
}

func start(t *testing.T, name, path string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(path, args...), out: &proctest.Buffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("%s output (tail):\n%s", name, tail(p.out.String(), 3000))
		}
	})
	return p
}

// kill sends SIGKILL and waits until the process is reaped.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// term sends SIGTERM and waits up to d for the process to exit; it
// reports the exit error (nil: status 0).
func (p *proc) term(t *testing.T, d time.Duration) error {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("%s did not exit within %v of SIGTERM", p.name, d)
		return nil
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// waitFor polls cond until it holds, failing the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dev is a `teegate dev` process: embedded NATS and the gateway.
type dev struct {
	*proc
	url, nats, key, dataDir string
}

var natsLine = regexp.MustCompile(`(?m)^\s+NATS:\s+(nats://\S+)`)

func startDev(t *testing.T, args ...string) *dev {
	t.Helper()
	d := &dev{url: "http://" + proctest.FreeAddr(t), key: "sk-serverless", dataDir: t.TempDir()}
	all := append([]string{"dev", "--addr", strings.TrimPrefix(d.url, "http://"), "--data-dir", d.dataDir, "--api-key", d.key,
		"--log-level", "warn", "--log-format", "text", "--nats-listen", "127.0.0.1:0"}, args...)
	d.proc = start(t, "teegate dev", filepath.Join(proctest.Dir(t), "teegate"), all...)
	waitFor(t, 60*time.Second, "the teegate dev banner", func() bool {
		return strings.Contains(d.out.String(), "Press Ctrl-C") || d.exited()
	})
	m := natsLine.FindStringSubmatch(d.out.String())
	if d.exited() || m == nil {
		t.Fatalf("teegate dev did not start:\n%s", d.out.String())
	}
	d.nats = m[1]
	return d
}

// worker starts `teegate worker` with the simulated TEE on the dev's
// NATS (its data directory holds the simulated root the dev trusts).
func (d *dev) worker(t *testing.T, id string, extra ...string) *proc {
	t.Helper()
	args := append([]string{"worker", "--nats", d.nats, "--engine", "builtin", "--data-dir", d.dataDir, "--id", id,
		"--log-level", "warn", "--log-format", "text"}, extra...)
	return start(t, "worker "+id, filepath.Join(proctest.Dir(t), "teegate"), args...)
}

// serving reports how many workers the gateway lists as admitted and
// serving.
func serving(t *testing.T, url, key string) int {
	req, _ := http.NewRequest("GET", url+"/v1/attestation/workers", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var body struct {
		Data []struct {
			Decision string `json:"decision"`
			Serving  bool   `json:"serving"`
		} `json:"data"`
		Pending []struct {
			Model   string `json:"model"`
			Waiting int    `json:"waiting"`
			Queued  int    `json:"queued"`
		} `json:"pending"`
	}
	if json.NewDecoder(resp.Body).Decode(&body) != nil {
		return -1
	}
	n := 0
	for _, w := range body.Data {
		if w.Decision == "admitted" && w.Serving {
			n++
		}
	}
	return n
}

// waiting is the gateway's count of requests waiting for model, and the
// fleet-wide tickets (the scale signal).
func waiting(t *testing.T, url, key, model string) (here, queued int) {
	req, _ := http.NewRequest("GET", url+"/v1/attestation/workers", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1, -1
	}
	defer resp.Body.Close()
	var body struct {
		Pending []struct {
			Model   string `json:"model"`
			Waiting int    `json:"waiting"`
			Queued  int    `json:"queued"`
		} `json:"pending"`
	}
	if json.NewDecoder(resp.Body).Decode(&body) != nil {
		return -1, -1
	}
	for _, p := range body.Pending {
		if p.Model == model {
			return p.Waiting, p.Queued
		}
	}
	return 0, 0
}

// answer is what a client saw of one request.
type answer struct {
	status     int
	retryAfter string
	receipt    string // Teegate-Receipt (non-stream)
	body       string
	err        error
	firstByte  bool // a stream's first SSE event arrived
	elapsed    time.Duration
}

const chatBody = `{"model":"teegate-builtin","max_tokens":%d,"stream":%t,"messages":[{"role":"user","content":"Tell me about lighthouses."}]}`

// chat posts one chat completion and reads the whole answer.
func chat(ctx context.Context, client *http.Client, url, key string, stream bool, maxTokens int) answer {
	start := time.Now()
	req, _ := http.NewRequestWithContext(ctx, "POST", url+"/v1/chat/completions", strings.NewReader(fmt.Sprintf(chatBody, maxTokens, stream)))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return answer{err: err, elapsed: time.Since(start)}
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), receipt: resp.Header.Get("Teegate-Receipt")}
	var b strings.Builder
	if stream && resp.StatusCode == 200 {
		r := bufio.NewReader(resp.Body)
		for {
			line, err := r.ReadString('\n')
			b.WriteString(line)
			if strings.HasPrefix(line, "data: ") {
				a.firstByte = true
			}
			if err != nil {
				if err != io.EOF {
					a.err = err
				}
				break
			}
		}
	} else {
		raw, err := io.ReadAll(resp.Body)
		a.err = err
		b.Write(raw)
	}
	a.body, a.elapsed = b.String(), time.Since(start)
	return a
}

// ok reports a complete, attested answer: 200 with a receipt (in the
// header, or a stream's receipt event followed by [DONE]).
func (a answer) ok(stream bool) bool {
	if a.err != nil || a.status != 200 {
		return false
	}
	if stream {
		return strings.Contains(a.body, "teegate_receipt") && strings.HasSuffix(a.body, "data: [DONE]\n\n")
	}
	return a.receipt != ""
}

// cleanError reports an OpenAI-shaped error answer: a status with an
// {"error":...} body (a stream: an error event, then [DONE]).
func (a answer) cleanError(stream bool) bool {
	if a.err != nil {
		return false
	}
	if a.status != 200 {
		return a.status >= 400 && strings.Contains(a.body, `"error"`)
	}
	return stream && strings.Contains(a.body, `"error"`) && strings.HasSuffix(a.body, "data: [DONE]\n\n")
}

func newClient(n int) *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: n}}
}
