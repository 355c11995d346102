package serverless

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/teegate/teegate/enclave/sim"
	"github.com/teegate/teegate/internal/proctest"
)

// freeBase finds a port base whose client (+0), route (+10) and
// monitoring (+20) ports are free on loopback.
func freeBase(t *testing.T) int {
	t.Helper()
	for range 50 {
		base := 20000 + rand.N(30000)
		ok := true
		for _, off := range []int{0, 10, 20} {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+off))
			if err != nil {
				ok = false
				break
			}
			ln.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}

// A NATS restart during load: requests in the gap fail cleanly and
// retryably (an OpenAI error with Retry-After, never a hang or a dropped
// connection), and later ones succeed without restarting the gateway or
// the worker. A real bin/nats-server (one node, JetStream, the auth
// callout) with `teegate gateway` and a `teegate worker` that joins by its
// evidence.
func TestNATSRestartDuringLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process")
	}
	bin := proctest.Dir(t)
	teegate := filepath.Join(bin, "teegate")
	dir := t.TempDir()
	base := freeBase(t)
	if out, err := exec.Command(teegate, "nats-config", "--dir", dir, "--nodes", "1", "--port-base", strconv.Itoa(base)).CombinedOutput(); err != nil {
		t.Fatalf("nats-config: %v\n%s", err, out)
	}
	conf := filepath.Join(dir, "node-n1.conf")
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", base)
	monitor := fmt.Sprintf("http://127.0.0.1:%d/healthz", base+20)
	startNATS := func() *proc {
		p := start(t, "nats-server", filepath.Join(bin, "nats-server"), "-c", conf)
		waitFor(t, 30*time.Second, "nats-server healthy", func() bool {
			resp, err := http.Get(monitor)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
		return p
	}
	ns := startNATS()
	simDir := filepath.Join(dir, "simdata")
	if _, err := sim.LoadOrCreateRoot(filepath.Join(simDir, sim.RootDir)); err != nil {
		t.Fatal(err)
	}
	creds := filepath.Join(dir, "service.nk")
	gwURL := "http://" + proctest.FreeAddr(t)
	start(t, "gateway", teegate, "gateway", "--nats", natsURL, "--nats-creds", creds, "--nats-sys-creds", filepath.Join(dir, "sys.nk"),
		"--admission-seed", filepath.Join(dir, "admission.nk"), "--policy", "dev", "--allow-simulated",
		"--sim-root", filepath.Join(simDir, sim.RootDir, sim.RootCertFile), "--addr", strings.TrimPrefix(gwURL, "http://"),
		"--model", "teegate-builtin", "--cold-start-timeout", "5s", "--log-level", "warn")
	waitFor(t, 60*time.Second, "the gateway", func() bool {
		resp, err := http.Get(gwURL + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	out, err := exec.Command(teegate, "keys", "create", "--nats", natsURL, "--nats-creds", creds, "--tenant", "t", "--admin").Output()
	if err != nil {
		t.Fatalf("keys create: %v", err)
	}
	key := strings.TrimSpace(string(out))
	start(t, "worker", teegate, "worker", "--nats", natsURL, "--engine", "builtin", "--data-dir", simDir, "--id", "w1", "--log-level", "warn")
	waitFor(t, 60*time.Second, "the worker serving", func() bool { return serving(t, gwURL, key) == 1 })

	// Eight clients in a loop until stopped.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	type result struct {
		answer
		stream bool
		at     time.Time
	}
	var mu sync.Mutex
	var results []result
	stop := make(chan struct{})
	var wg sync.WaitGroup
	hc := newClient(8)
	hc.Timeout = time.Minute
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				stream := (i+n)%2 == 1
				a := chat(ctx, hc, gwURL, key, stream, 8)
				mu.Lock()
				results = append(results, result{a, stream, time.Now()})
				mu.Unlock()
				if !a.ok(stream) {
					// A client backing off (less than the Retry-After it
					// was given, to keep probing the gap).
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	count := func(okAfter time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, r := range results {
			if r.at.After(okAfter) && r.ok(r.stream) {
				n++
			}
		}
		return n
	}
	waitFor(t, 30*time.Second, "load flowing", func() bool { return count(time.Time{}) >= 20 })
	if err := ns.term(t, 30*time.Second); err != nil {
		t.Logf("nats-server exit: %v", err)
	}
	down := time.Now()
	// The gap: a second with no server (the scenario, not a wait for an event).
	time.Sleep(time.Second)
	startNATS()
	up := time.Now()
	waitFor(t, 90*time.Second, "requests succeeding again after the restart", func() bool { return count(up) >= 20 })
	close(stop)
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatal("requests hung")
	}
	var failed, gap int
	for i, r := range results {
		switch {
		case r.ok(r.stream):
		case r.err != nil:
			t.Fatalf("request %d: the connection failed: %v", i, r.err)
		case !r.cleanError(r.stream):
			t.Fatalf("request %d ended neither with a completion nor a clean error: %d %s", i, r.status, tail(r.body, 300))
		case r.status != 200 && (r.retryAfter == "" || r.status < 500):
			t.Fatalf("request %d failed without a retryable status: %d Retry-After %q %s", i, r.status, r.retryAfter, tail(r.body, 300))
		default:
			failed++
			if r.at.After(down) {
				gap++
			}
		}
	}
	t.Logf("%d requests: %d failed cleanly (%d after the server went down), %d succeeded after it came back", len(results), failed, gap, count(up))
}
