package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/teegate/teegate/enclave/sim"
	"github.com/teegate/teegate/internal/workernode"
	"github.com/teegate/teegate/worker"
	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/engine/builtin"
	"github.com/teegate/teegate/worker/wire"
)

// countingEngine counts every call that reaches the engine.
type countingEngine struct {
	engine.Engine
	calls atomic.Int64
}

func (c *countingEngine) Do(ctx context.Context, call engine.Call) (*engine.Result, error) {
	c.calls.Add(1)
	return c.Engine.Do(ctx, call)
}

// checkRefusedWorker: a worker whose simulated TD reports an MRTD the
// policy does not pin joins the cluster as a worker does (its evidence is
// its credential, judged by whichever gateway answers the callout). Both
// gateways list it as refused; a connection presenting its evidence may
// not subscribe to the request subjects (the NATS server says so), and of
// 500 requests through the two gateways neither its engine nor that
// subscription sees one.
func checkRefusedWorker(t *testing.T, ctx context.Context, e env) {
	m := sim.MeasurementsLabeled("rogue")
	att, _, err := sim.OpenAttester(filepath.Join(e.dir, "sim"), sim.Config{GPUs: 1, Measurements: &m})
	if err != nil {
		t.Fatal(err)
	}
	inner, err := builtin.New(builtin.Config{})
	if err != nil {
		t.Fatal(err)
	}
	eng := &countingEngine{Engine: inner}
	node, err := workernode.Start(ctx, workernode.Config{Engine: eng, Attester: att, Worker: worker.Config{ID: "rogue"},
		Dial: func(o ...nats.Option) (*nats.Conn, error) {
			return nats.Connect(e.nats, append([]nats.Option{nats.Name("rogue"), nats.MaxReconnects(-1)}, o...)...)
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = node.Close(cctx)
	}()
	st := node.Worker.Admission()
	if st.Admitted || !strings.Contains(strings.Join(st.Reasons, "; "), "measurement mrtd is not pinned") {
		t.Fatalf("rogue worker admission %+v", st)
	}
	// Both replicas list the refusal, with the policy's reason.
	view := decisions(t, ctx, e, func(v map[string]string) bool { _, ok := v["rogue"]; return ok })
	if d := view["rogue"]; !strings.Contains(d, " refused ") || !strings.Contains(d, "mrtd is not pinned") {
		t.Fatalf("rogue listed as %q", d)
	}

	// Its own subscribe to the request subjects: the server refuses it.
	ep := node.Keeper.Current()
	opts, err := wire.WorkerConnectOptions(ep.ID, ep.SigningPub(), ep.Sign)
	if err != nil {
		t.Fatal(err)
	}
	violations := make(chan error, 16)
	opts = append(opts, nats.Name("rogue-subscriber"), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case violations <- err:
		default:
		}
	}))
	nc, err := nats.Connect(e.nats, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var got atomic.Int64
	subs := []string{wire.InferSubject("teegate-builtin"), wire.InferWildcard}
	for _, subj := range subs {
		if _, err := nc.QueueSubscribe(subj, "workers", func(*nats.Msg) { got.Add(1) }); err != nil {
			t.Fatal(err)
		}
		if _, err := nc.Subscribe(subj, func(*nats.Msg) { got.Add(1) }); err != nil {
			t.Fatal(err)
		}
	}
	denied := map[string]bool{}
	timeout := time.After(10 * time.Second)
	for len(denied) < len(subs) {
		select {
		case err := <-violations:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatalf("rogue subscriber: %v, want a permissions violation", err)
			}
			for _, subj := range subs {
				if strings.Contains(err.Error(), "Subscription to \""+subj+"\"") {
					denied[subj] = true
				}
			}
		case <-timeout:
			t.Fatalf("the server did not refuse the rogue's subscriptions (refused: %v)", denied)
		}
	}

	// A model only a refused worker offers is 503 on both gateways, not
	// 404: it exists, no attested worker may serve it.
	only, err := builtin.New(builtin.Config{ModelID: "refused-only"})
	if err != nil {
		t.Fatal(err)
	}
	m2 := sim.MeasurementsLabeled("rogue-2")
	att2, _, err := sim.OpenAttester(filepath.Join(e.dir, "sim"), sim.Config{GPUs: 1, Measurements: &m2})
	if err != nil {
		t.Fatal(err)
	}
	node2, err := workernode.Start(ctx, workernode.Config{Engine: only, Attester: att2, Worker: worker.Config{ID: "rogue-2"},
		Dial: func(o ...nats.Option) (*nats.Conn, error) { return nats.Connect(e.nats, o...) }})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = node2.Close(cctx)
	}()
	decisions(t, ctx, e, func(v map[string]string) bool { return strings.Contains(v["rogue-2"], " refused ") })
	for _, gw := range e.gateways {
		req, _ := http.NewRequestWithContext(ctx, "POST", gw+"/v1/chat/completions",
			strings.NewReader(`{"model":"refused-only","messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Authorization", "Bearer "+e.key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if code, ok := errorCode(raw); resp.StatusCode != http.StatusServiceUnavailable || !ok || code != "no_capacity" ||
			!strings.Contains(string(raw), "No attested worker") {
			t.Fatalf("%s: a model only a refused worker offers: %d %s", gw, resp.StatusCode, raw)
		}
	}

	// 500 requests through the two gateways: all served, none by the rogue.
	const total, parallel = 500, 25
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Value
	work := make(chan int)
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				o := fire(ctx, e.gateways[i%len(e.gateways)], e.key, i%5 == 0, 4)
				if o.kind != outcomeCompletion {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("request %d: %s", i, o))
				}
			}
		}()
	}
	for i := range total {
		work <- i
	}
	close(work)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d requests failed; first: %v", n, total, firstErr.Load())
	}
	if n := eng.calls.Load(); n != 0 {
		t.Fatalf("the refused worker's engine saw %d of %d requests", n, total)
	}
	if n := node.Worker.Served(); n != 0 {
		t.Fatalf("the refused worker served %d of %d requests", n, total)
	}
	if n := got.Load(); n != 0 {
		t.Fatalf("the rogue's subscriptions received %d requests", n)
	}
}

// checkBadConnection: a wrong credential or an unreachable cluster gives
// one error line and a non-zero exit, never a hang.
func checkBadConnection(t *testing.T, ctx context.Context, teegate string, e env) {
	bad := filepath.Join(t.TempDir(), "bad.nk")
	if err := os.WriteFile(bad, []byte("SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "nats://" + ln.Addr().String()
	ln.Close()
	for name, args := range map[string][]string{
		"wrong credential":       {"gateway", "--nats", e.nats, "--nats-creds", bad, "--addr", "127.0.0.1:0"},
		"unreachable":            {"gateway", "--nats", dead, "--nats-creds", e.creds, "--addr", "127.0.0.1:0", "--nats-timeout", "2s"},
		"keys, unreachable":      {"keys", "list", "--nats", dead, "--nats-creds", e.creds, "--nats-timeout", "2s"},
		"keys, wrong credential": {"keys", "list", "--nats", e.nats, "--nats-creds", bad},
		"audit, unreachable":     {"audit", "verify", "--nats", dead, "--nats-creds", e.creds, "--nats-timeout", "2s"},
		"admission, unreachable": {"admission", "--nats", dead, "--nats-creds", e.creds, "--nats-timeout", "2s",
			"--admission-seed", filepath.Join(e.dir, "nats", "admission.nk")},
		"worker, unreachable": {"worker", "--nats", dead, "--nats-timeout", "2s", "--data-dir", filepath.Join(e.dir, "sim")},
	} {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		out, err := exec.CommandContext(cctx, teegate, args...).CombinedOutput()
		hung := cctx.Err() != nil
		cancel()
		// Log records (JSON, such as the simulated worker's warning) aside,
		// one line says what failed.
		var lines []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if !strings.HasPrefix(l, "{") {
				lines = append(lines, l)
			}
		}
		last := ""
		if len(lines) > 0 {
			last = lines[len(lines)-1]
		}
		if err == nil || hung || len(lines) != 1 || !strings.Contains(last, "connecting to NATS") {
			t.Fatalf("%s: err %v, output:\n%s", name, err, out)
		}
	}
}
