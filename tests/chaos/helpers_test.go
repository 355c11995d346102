package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/teegate/teegate/internal/proctest"
	"github.com/teegate/teegate/internal/stack"
	"github.com/teegate/teegate/internal/stacktest"
	"github.com/teegate/teegate/worker/engine"
)

// long reports whether this is `make chaos` (more rounds, bigger floods).
func long() bool { return os.Getenv("TEEGATE_CHAOS_LONG") != "" }

// scale returns short, or long under `make chaos`.
func scale[T any](short, longer T) T {
	if long() {
		return longer
	}
	return short
}

var leakOpts = []goleak.Option{
	// Process-wide singletons started on first use, not per test.
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
	// fasthttp's idle-worker cleaner notices a stopped server only at its
	// next 10 s tick.
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine"),
	goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
}

func TestMain(m *testing.M) {
	// The binaries built for the process tests go when the leak check ends.
	goleak.VerifyTestMain(m, append(leakOpts, goleak.Cleanup(func(code int) { proctest.Cleanup(); os.Exit(code) }))...)
}

// baseline is the process's goroutines and heap at a quiet moment.
type baseline struct {
	goroutines int
	heap       uint64
}

func quiet() baseline {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return baseline{goroutines: runtime.NumGoroutine(), heap: ms.HeapInuse}
}

// settled waits until goroutines are back within slack of b and the heap
// within 32 MiB of it, then fails the test if they are not after the
// timeout. what names the fault just survived.
func settled(t *testing.T, b baseline, what string) {
	t.Helper()
	const slack = 20
	deadline := time.Now().Add(45 * time.Second)
	for {
		// Idle keep-alive connections of the test's own client are not
		// the stack's; closing them lets the server's side go too.
		client.CloseIdleConnections()
		now := quiet()
		okG := now.goroutines <= b.goroutines+slack
		okH := now.heap <= b.heap+32<<20
		if okG && okH {
			t.Logf("%s: settled at %d goroutines (baseline %d), heap %d KiB (baseline %d KiB)", what,
				now.goroutines, b.goroutines, now.heap>>10, b.heap>>10)
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("%s: not settled: %d goroutines (baseline %d), heap %d KiB (baseline %d KiB)\n%s", what,
				now.goroutines, b.goroutines, now.heap>>10, b.heap>>10, buf[:n])
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronization
	}
}

// start starts a stack; its shutdown, then a goroutine leak check, run at
// the end of the test.
func start(t *testing.T, opts ...stacktest.Option) *stack.Stack {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t, leakOpts...) })
	return stacktest.Start(t, opts...)
}

func withGateway(f func(*stack.Config)) stacktest.Option { return f }

func chatBody(model string, maxTokens int, stream bool) string {
	return fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"Tell me about lighthouses."}],"max_tokens":%d,"stream":%t}`,
		model, maxTokens, stream)
}

var client = &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// post sends body to the gateway's chat endpoint.
func post(t *testing.T, base, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+stacktest.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("posting: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// mustServe checks that the service still answers a normal request.
func mustServe(t *testing.T, base, model string) {
	t.Helper()
	resp, b := post(t, base, chatBody(model, 8, false))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("service after the fault: status %d: %s", resp.StatusCode, b)
	}
	if resp.Header.Get("Teegate-Receipt") == "" {
		t.Fatalf("service after the fault: no receipt")
	}
}

// apiError is the OpenAI error body.
type apiError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// wantAPIError checks status and that b is an OpenAI error of type typ
// (and code, when not empty).
func wantAPIError(t *testing.T, what string, status int, b []byte, wantStatus int, typ, code string) {
	t.Helper()
	if status != wantStatus {
		t.Errorf("%s: status %d, want %d: %s", what, status, wantStatus, b)
		return
	}
	var e apiError
	if err := json.Unmarshal(b, &e); err != nil || e.Error.Message == "" {
		t.Errorf("%s: not an OpenAI error body: %q", what, b)
		return
	}
	if e.Error.Type != typ {
		t.Errorf("%s: error type %q, want %q (%s)", what, e.Error.Type, typ, b)
	}
	if code != "" && (e.Error.Code == nil || *e.Error.Code != code) {
		t.Errorf("%s: error code %v, want %q (%s)", what, e.Error.Code, code, b)
	}
}

// watched wraps an engine and records when each stream stops: the time
// the worker closed it or its context ended, whichever came first.
type watched struct {
	engine.Engine
	mu      sync.Mutex
	stopped []time.Time
	open    atomic.Int64
	calls   atomic.Int64
}

func (w *watched) Do(ctx context.Context, call engine.Call) (*engine.Result, error) {
	w.calls.Add(1)
	w.open.Add(1)
	r, err := w.Engine.Do(ctx, call)
	if err != nil || r.Stream == nil {
		w.stop()
		return r, err
	}
	r.Stream = &watchedStream{Stream: r.Stream, w: w}
	return r, nil
}

func (w *watched) stop() {
	w.mu.Lock()
	w.stopped = append(w.stopped, time.Now())
	w.mu.Unlock()
	w.open.Add(-1)
}

// lastStop is the time the latest stream stopped.
func (w *watched) lastStop() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.stopped) == 0 {
		return time.Time{}
	}
	return w.stopped[len(w.stopped)-1]
}

type watchedStream struct {
	engine.Stream
	w    *watched
	once sync.Once
}

func (s *watchedStream) Next(ctx context.Context) ([]byte, error) {
	p, err := s.Stream.Next(ctx)
	if err != nil && ctx.Err() != nil {
		s.once.Do(s.w.stop)
	}
	return p, err
}

func (s *watchedStream) Close() error {
	s.once.Do(s.w.stop)
	return s.Stream.Close()
}

// firstEvent reads r up to and including the first SSE data line.
func firstEvent(t *testing.T, r *bufio.Reader) {
	t.Helper()
	for {
		line, err := r.ReadBytes('\n')
		if bytes.HasPrefix(line, []byte("data:")) {
			return
		}
		if err != nil {
			t.Fatalf("stream ended before its first event: %v", err)
		}
	}
}

// proc is a child process reaped at the end of the test.
type proc struct {
	cmd  *exec.Cmd
	out  *proctest.Buffer
	done chan struct{}
}

func startProc(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), out: &proctest.Buffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", filepath.Base(bin), err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(bin), p.out.String())
		}
	})
	return p
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// stop asks the process to end (SIGTERM) and waits, killing it after 30 s.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.kill()
	}
}

// eventually polls cond (every 10 ms) until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	stacktest.Eventually(t, timeout, cond, what)
}

func execCommand(ctx context.Context, bin string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, bin, args...)
}
