package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/teegate/teegate/internal/proctest"
	"github.com/teegate/teegate/internal/stack"
	"github.com/teegate/teegate/internal/stacktest"
)

// streamOutcome reads a stream after its first event until it ends and
// says how: "done" ([DONE] seen after no error), "error" (an error event,
// then [DONE] or the end), "cut" (the connection ended without either).
func streamOutcome(br *bufio.Reader) (string, error) {
	sawError := false
	for {
		line, err := br.ReadString('\n')
		if strings.HasPrefix(line, "data: [DONE]") {
			if sawError {
				return "error", nil
			}
			return "done", nil
		}
		if strings.HasPrefix(line, `data: {"error"`) {
			sawError = true
		}
		if err != nil {
			if sawError {
				return "error", nil
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return "cut", nil
			}
			return "", err
		}
	}
}

// openStream starts a streamed chat request and reads its first event.
func openStream(t *testing.T, base, model string) (*http.Response, *bufio.Reader) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(chatBody(model, 4000, true)))
	req.Header.Set("Authorization", "Bearer "+stacktest.APIKey)
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("stream: status %d: %s", resp.StatusCode, b)
	}
	br := bufio.NewReader(resp.Body)
	firstEvent(t, br)
	return resp, br
}

// TestWorkerKilledMidStream: a real worker process (teegate worker, the
// simulated TEE, admitted by its evidence) is killed with SIGKILL while it
// streams. The client's stream ends (with an error event, then [DONE];
// never a complete answer or a receipt it did not earn) instead of hanging; the model answers
// 503/404 while no worker serves it, the rest of the service is
// unaffected, and a restarted worker serves again.
func TestWorkerKilledMidStream(t *testing.T) {
	bin := proctest.Bin(t, "teegate")
	dir := t.TempDir()
	s := start(t, withGateway(func(c *stack.Config) {
		c.DataDir, c.NATSListen = dir, "127.0.0.1:0"
		c.Gateway.StreamProbe = 200 * time.Millisecond
	}))
	const model = "chaos-proc"
	base := quiet()
	worker := func() *proc {
		p := startProc(t, bin, "worker", "--nats", s.NATSURL, "--tee", "simulated", "--data-dir", dir,
			"--model", model, "--latency-per-token", "5ms", "--log-level", "warn")
		// A killed worker's registry record outlives it for a while, so
		// wait for an answer, not for the model to be listed.
		eventually(t, 60*time.Second, "the worker process to be admitted and serve", func() bool {
			r, _ := post(t, s.URL, chatBody(model, 4, false))
			return r.StatusCode == 200
		})
		return p
	}
	for round := range scale(2, 10) {
		w := worker()
		mustServe(t, s.URL, model)
		resp, br := openStream(t, s.URL, model)
		killed := time.Now()
		w.kill()
		how, err := streamOutcome(br)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("round %d: reading the stream after the kill: %v", round, err)
		}
		t.Logf("round %d: stream ended %q %v after the worker was killed", round, how, time.Since(killed).Round(time.Millisecond))
		if how == "done" {
			t.Fatalf("round %d: the stream claimed to be complete after its worker died", round)
		}
		// Meanwhile and after: the rest of the service is unaffected; the
		// model itself is refused cleanly until a worker comes back.
		mustServe(t, s.URL, "teegate-builtin")
		r, b := post(t, s.URL, chatBody(model, 4, false))
		if r.StatusCode != http.StatusServiceUnavailable && r.StatusCode != http.StatusNotFound {
			t.Fatalf("round %d: model with a dead worker: status %d: %s", round, r.StatusCode, b)
		}
		wantAPIError(t, "model with a dead worker", r.StatusCode, b, r.StatusCode, map[int]string{503: "server_error", 404: "invalid_request_error"}[r.StatusCode], "")
	}
	w := worker() // a restarted worker serves again
	mustServe(t, s.URL, model)
	w.stop()
	settled(t, base, "worker kill -9")
}

// TestNATSRestart: a real nats-server process (JetStream on disk) under a
// gateway process and a worker process (no TEE: a plain server has no
// admission) is killed and started again on the
// same port and store. Streams in flight end instead of hanging, and once
// the server is back both reconnect and the service answers again with
// its state (API keys, registry) intact.
func TestNATSRestart(t *testing.T) {
	teegate, natsBin := proctest.Bin(t, "teegate"), proctest.Bin(t, "nats-server")
	dir := t.TempDir()
	natsAddr := proctest.FreeAddr(t)
	host, port, _ := net.SplitHostPort(natsAddr)
	url := "nats://" + natsAddr
	nats := func() *proc {
		p := startProc(t, natsBin, "-a", host, "-p", port, "-js", "-sd", filepath.Join(dir, "js"))
		eventually(t, 30*time.Second, "nats-server to listen", func() bool {
			c, err := net.DialTimeout("tcp", natsAddr, time.Second)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
		return p
	}
	ns := nats()
	const key, model = "sk-chaos-nats", "chaos-nats"
	// The gateway creates the buckets; the key goes in once it has.
	gwAddr := proctest.FreeAddr(t)
	gw := startProc(t, teegate, "gateway", "--nats", url, "--addr", gwAddr, "--log-level", "warn", "--request-timeout", "10s",
		"--allow-unattested")
	gwURL := "http://" + gwAddr
	eventually(t, 60*time.Second, "the gateway to listen", func() bool {
		r, err := http.Get(gwURL + "/healthz")
		if err == nil {
			r.Body.Close()
		}
		return err == nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := runCmd(ctx, teegate, "keys", "add", "--nats", url, "--name", "chaos", "--key", key); err != nil {
		t.Fatalf("adding the key: %v\n%s", err, out)
	}
	// A plain nats-server has no admission (no auth callout): the worker
	// runs without a TEE and the gateway accepts answers without receipts.
	w := startProc(t, teegate, "worker", "--nats", url, "--tee", "none", "--data-dir", filepath.Join(dir, "worker"),
		"--model", model, "--latency-per-token", "5ms", "--log-level", "warn")
	ok := func() bool {
		r, b := postKey(gwURL, key, chatBody(model, 4, false))
		return r == 200 && strings.Contains(string(b), `"choices"`)
	}
	eventually(t, 60*time.Second, "the service to answer", ok)
	for round := range scale(1, 5) {
		// A stream in flight when the server dies.
		req, _ := http.NewRequest(http.MethodPost, gwURL+"/v1/chat/completions", strings.NewReader(chatBody(model, 4000, true)))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("round %d: stream: %v %v", round, err, resp)
		}
		br := bufio.NewReader(resp.Body)
		firstEvent(t, br)
		killed := time.Now()
		ns.kill()
		how, err := streamOutcome(br)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("round %d: reading the stream after NATS died: %v", round, err)
		}
		t.Logf("round %d: stream ended %q %v after nats-server was killed", round, how, time.Since(killed).Round(time.Millisecond))
		if how == "done" {
			t.Fatalf("round %d: the stream claimed to be complete after NATS died", round)
		}
		// While the bus is down the gateway answers, with an error.
		if r, b := postKey(gwURL, key, chatBody(model, 4, false)); r == 200 || r == 0 {
			t.Errorf("round %d: with NATS down: status %d: %s", round, r, b)
		}
		restarted := time.Now()
		ns = nats()
		eventually(t, 90*time.Second, "the service to answer after the NATS restart", ok)
		t.Logf("round %d: service back %v after nats-server restarted", round, time.Since(restarted).Round(time.Millisecond))
	}
	w.stop()
	gw.stop()
	ns.stop()
}

func postKey(base, key, body string) (int, []byte) {
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func runCmd(ctx context.Context, bin string, args ...string) (string, error) {
	p := execCommand(ctx, bin, args...)
	out, err := p.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %v: %w", filepath.Base(bin), args, err)
	}
	return string(out), nil
}

var _ = os.Getenv
