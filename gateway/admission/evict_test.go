package admission

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/teegate/teegate/attest/claims"

	"github.com/teegate/teegate/worker/wire"
)

// TestExpiryRefreshKeepsInFlight: a cooperative worker with short-lived
// evidence gets a notice before its admission ends, refreshes (new epoch,
// new connection) and retires the old connection only after the requests
// it was serving are answered: none fails.
func TestExpiryRefreshKeepsInFlight(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) {
		c.Verify.MaxAge = 4 * time.Second
		c.Notice = 2500 * time.Millisecond
		c.MinLease = time.Second
	})
	w := newWorker(t, e, "coop", nil)
	w.cooperative = true
	w.gate = make(chan struct{})
	if st := w.join(); !st.Allow {
		t.Fatalf("not admitted: %+v", st)
	}
	w.mu.Lock()
	first := w.cur.epoch
	w.mu.Unlock()

	const k = 8
	var wg sync.WaitGroup
	errs := make(chan error, k)
	replies := make(chan string, k)
	for range k {
		wg.Go(func() {
			m, err := e.gw.Request(wire.InferSubject(testModel), nil, 10*time.Second)
			if err != nil {
				errs <- err
				return
			}
			replies <- string(m.Data)
		})
	}
	waitFor(t, "requests in flight", 5*time.Second, func() bool { return w.served.Load() == k })
	// The notice arrives before expiry; the worker serves on a new
	// connection while the old one still holds k requests.
	waitFor(t, "a second connection", 10*time.Second, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.cur.epoch != first
	})
	close(w.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("in-flight request failed: %v", err)
	}
	close(replies)
	for r := range replies {
		if r != "coop/"+first {
			t.Fatalf("reply %q not from the first connection", r)
		}
	}
	newNC := <-w.refreshed
	select {
	case err := <-w.closedErr:
		t.Fatalf("the server closed a connection: %v", err)
	default:
	}
	// New requests are served on the new connection.
	m, err := e.gw.Request(wire.InferSubject(testModel), nil, 5*time.Second)
	if err != nil || strings.HasSuffix(string(m.Data), first) || !newNC.IsConnected() {
		t.Fatalf("after refresh: %v %q", err, m.Data)
	}
}

// TestExpiryEvictsThenRefreshReadmits: a worker that ignores the notice is
// disconnected by the server when its evidence expires; reconnecting on
// the same evidence gets it quarantined (its subscriptions are refused);
// refreshing its evidence and connecting anew re-admits it.
func TestExpiryEvictsThenRefreshReadmits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) {
		c.Verify.MaxAge = 3 * time.Second
		c.MinLease = time.Second
	})
	w := newWorker(t, e, "passive", nil)
	if st := w.join(); !st.Allow {
		t.Fatalf("not admitted: %+v", st)
	}
	request(t, e.gw, 5)
	select {
	case <-w.closedErr: // the server closes it ("User Authentication Expired"; nats.go may only see EOF)
	case <-time.After(10 * time.Second):
		t.Fatal("not disconnected at expiry")
	}
	w.mu.Lock()
	nc := w.cur.nc
	w.mu.Unlock()
	// nats.go reconnects on the old evidence and re-subscribes: refused.
	select {
	case <-w.violations:
	case <-time.After(10 * time.Second):
		t.Fatal("re-subscription after expiry not refused")
	}
	waitFor(t, "reconnection", 5*time.Second, nc.IsConnected)
	if _, err := e.gw.Request(wire.InferSubject(testModel), nil, time.Second); err == nil {
		t.Fatal("an expired worker answered")
	}
	// Refresh: new epoch, submitted over a quarantined connection of its
	// own key, and a new connection.
	nc.Close()
	ep, err := w.keeper.Rotate(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	q, err := w.dial(ep)
	if err != nil {
		t.Fatal(err)
	}
	if st := submit(t, q, ep.Raw); !st.Allow {
		t.Fatalf("refreshed evidence: %+v", st)
	}
	q.Close()
	if err := w.serveOn(ep); err != nil {
		t.Fatal(err)
	}
	if got := request(t, e.gw, 5); got["passive"] != 5 {
		t.Fatalf("after refresh: %v", got)
	}
}

// TestReloadEvicts: a policy reload that no longer admits a worker tells
// it to drain, kicks it after the grace period if it stays, and its
// reconnection is quarantined. The other worker keeps serving.
func TestReloadEvicts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) {
		c.Policy = PolicyFunc(func(context.Context, *claims.Claims, time.Time) (bool, []string, error) { return true, nil, nil })
		c.Grace = 300 * time.Millisecond
	})
	good := newWorker(t, e, "good", nil)
	stale := newWorker(t, e, "stale", badMeasurements())
	good.join()
	if st := stale.join(); !st.Allow {
		t.Fatalf("stale not admitted before the reload: %+v", st)
	}
	// Both share the queue group.
	waitFor(t, "both serving", 5*time.Second, func() bool {
		got := request(t, e.gw, 20)
		return got["good"] > 0 && got["stale"] > 0
	})
	if err := e.svc.Reload(t.Context(), pinPolicy()); err != nil {
		t.Fatal(err)
	}
	// stale ignores the notice: the server kicks it after Grace.
	select {
	case err := <-stale.closedErr:
		t.Logf("stale closed: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("stale worker not kicked")
	}
	select {
	case <-stale.violations:
	case <-time.After(5 * time.Second):
		t.Fatal("stale worker's re-subscription not refused")
	}
	before := stale.served.Load()
	if got := request(t, e.gw, 50); got["good"] != 50 || stale.served.Load() != before {
		t.Fatalf("after reload: %v", got)
	}
	var stat *Decision
	for _, d := range e.svc.Decisions() {
		if d.WorkerID == "stale" {
			stat = &d
		}
	}
	if stat == nil || stat.Allow || stat.Reasons[0] != "mrtd is not an approved build" {
		t.Fatalf("stale decision %+v", stat)
	}
	if e.svc.Stats().Evicted != 1 {
		t.Fatalf("stats %+v", e.svc.Stats())
	}
}
