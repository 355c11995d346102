package admission

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/teegate/teegate/worker/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// request sends n requests for the test model from the gateway connection
// and returns how many were answered by each worker id.
func request(t *testing.T, gw *nats.Conn, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		m, err := gw.Request(wire.InferSubject(testModel), []byte(`{}`), 5*time.Second)
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		got[strings.SplitN(string(m.Data), "/", 2)[0]]++
	}
	return got
}

func TestAdmittedAndRefusedOnOneModel(t *testing.T) {
	e := newEnv(t, nil)
	good := newWorker(t, e, "good", nil)
	bad := newWorker(t, e, "bad", badMeasurements())

	if st := good.join(); !st.Allow {
		t.Fatalf("good worker not admitted: %+v", st)
	}
	st := bad.join()
	if st.Allow || len(st.Reasons) == 0 || st.Reasons[0] != "mrtd is not an approved build" {
		t.Fatalf("bad worker status %+v", st)
	}
	// The refused worker's service subscriptions were refused by NATS.
	select {
	case err := <-bad.violations:
		if !strings.Contains(err.Error(), "Subscription") {
			t.Fatalf("violation %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no permissions violation for the refused worker's service")
	}

	const n = 200
	got := request(t, e.gw, n)
	if got["good"] != n || bad.served.Load() != 0 {
		t.Fatalf("answers %v, refused worker served %d", got, bad.served.Load())
	}

	// A direct subscription to every inference subject is refused too, and
	// receives nothing.
	bad.mu.Lock()
	nc := bad.cur.nc
	bad.mu.Unlock()
	for len(bad.violations) > 0 {
		<-bad.violations
	}
	sub, err := nc.SubscribeSync(wire.InferWildcard)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-bad.violations:
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), wire.InferWildcard) {
			t.Fatalf("violation %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("direct subscribe to the inference wildcard was not refused")
	}
	request(t, e.gw, 10)
	if _, err := sub.NextMsg(50 * time.Millisecond); err == nil {
		t.Fatal("refused worker received a request")
	}

	ds := e.svc.Decisions()
	if len(ds) != 2 {
		t.Fatalf("decisions %+v", ds)
	}
	for _, d := range ds {
		wantAllow := d.WorkerID == "good"
		if d.Allow != wantAllow || d.Claims == nil || d.Claims.TEE != "simulated" || len(d.Connections) == 0 {
			t.Fatalf("decision %+v", d)
		}
		if !wantAllow && (d.Reasons[0] != "mrtd is not an approved build" || !d.ExpiresAt.IsZero()) {
			t.Fatalf("deny decision %+v", d)
		}
		// Recorded in the bucket too.
		ent, err := e.svc.decKV.Get(context.Background(), d.EvidenceID)
		if err != nil || !strings.Contains(string(ent.Value()), `"worker_id":"`+d.WorkerID+`"`) {
			t.Fatalf("bucket record %v", err)
		}
	}
}

// TestAdmittedAndRefused1000 is the figure: of 1,000 requests the
// refused worker receives none.
func TestAdmittedAndRefused1000(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 round trips")
	}
	e := newEnv(t, nil)
	good := newWorker(t, e, "good", nil)
	bad := newWorker(t, e, "bad", badMeasurements())
	good.join()
	bad.join()
	const n = 1000
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := map[string]int{}
	for range 4 {
		wg.Go(func() {
			got := request(t, e.gw, n/4)
			mu.Lock()
			defer mu.Unlock()
			for k, v := range got {
				total[k] += v
			}
		})
	}
	wg.Wait()
	if total["good"] != n || bad.served.Load() != 0 {
		t.Fatalf("answers %v, refused worker served %d", total, bad.served.Load())
	}
}
