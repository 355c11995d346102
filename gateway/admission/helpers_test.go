package admission

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/claims"
	"github.com/teegate/teegate/attest/verifiers"
	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/enclave/sim"
	"github.com/teegate/teegate/enclave/sim/simtdx"
	"github.com/teegate/teegate/internal/natsembed"
	"github.com/teegate/teegate/worker/wire"
)

const testModel = "teegate-builtin"

var (
	rootOnce sync.Once
	simRoot  *sim.Root
)

func testRoot(t testing.TB) *sim.Root {
	rootOnce.Do(func() {
		r, err := sim.NewRoot()
		if err != nil {
			t.Fatal(err)
		}
		simRoot = r
	})
	return simRoot
}

// badMeasurements are a simulated TD the test policy refuses.
func badMeasurements() *simtdx.Measurements {
	m := simtdx.DefaultMeasurements()
	m.MRTD[0] ^= 0xff
	return &m
}

func badMRTD() string { m := badMeasurements(); return hex.EncodeToString(m.MRTD[:]) }

// pinPolicy admits every verified bundle except the bad TD's.
func pinPolicy() Policy {
	bad := badMRTD()
	return PolicyFunc(func(_ context.Context, c *claims.Claims, _ time.Time) (bool, []string, error) {
		if c.Measurements["mrtd"] == bad {
			return false, []string{"mrtd is not an approved build"}, nil
		}
		return true, nil, nil
	})
}

func denyAll(why string) Policy {
	return PolicyFunc(func(context.Context, *claims.Claims, time.Time) (bool, []string, error) {
		return false, []string{why}, nil
	})
}

// env is one embedded server with the callout, an admission service and a
// gateway-side connection.
type env struct {
	srv *natsembed.Server
	gw  *nats.Conn
	svc *Service
}

func newEnv(t testing.TB, mut func(*Config)) *env {
	t.Helper()
	akp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := akp.PublicKey()
	srv, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:0",
		Auth: &natsembed.Auth{CalloutIssuer: pub}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	conn := func(name string, sys bool) *nats.Conn {
		var nc *nats.Conn
		var err error
		if sys {
			nc, err = srv.ConnectSystem(name)
		} else {
			nc, err = srv.Connect(name)
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	cfg := Config{
		Conn: conn("admission", false), Sys: conn("admission-sys", true), Issuer: akp,
		Policy: pinPolicy(), Verify: verifiers.Options(verifiers.Config{AllowSimulated: true}),
	}
	if mut != nil {
		mut(&cfg)
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Stop)
	return &env{srv: srv, gw: conn("gateway", false), svc: svc}
}

// tworker imitates the worker's NATS behaviour under admission: it joins
// (connect, submit, reconnect), serves its models through micro with a
// handler goroutine per request, and, when cooperative, answers a
// lame-duck notice by refreshing its evidence make-before-break: new
// epoch, new connection serving, then the old one stops taking requests,
// finishes those in flight, and closes.
type tworker struct {
	t           testing.TB
	e           *env
	id          string
	keeper      *enclave.Keeper
	cooperative bool

	gate       chan struct{} // handlers wait for it to close when set
	served     atomic.Int64
	violations chan error
	closedErr  chan error // why a connection was closed by the server
	refreshed  chan *nats.Conn
	wg         sync.WaitGroup

	mu  sync.Mutex
	cur *serving
}

type serving struct {
	nc       *nats.Conn
	svc      micro.Service
	epoch    string
	inflight sync.WaitGroup
}

func newWorker(t testing.TB, e *env, id string, m *simtdx.Measurements) *tworker {
	t.Helper()
	a, err := sim.NewAttester(sim.Config{Root: testRoot(t), QuoteDelay: sim.NoDelay, Measurements: m})
	if err != nil {
		t.Fatal(err)
	}
	k, err := enclave.NewKeeper(t.Context(), enclave.KeeperConfig{Attester: a, Identity: attest.WorkerIdentity{ID: id, Models: []string{testModel}}})
	if err != nil {
		t.Fatal(err)
	}
	w := &tworker{t: t, e: e, id: id, keeper: k, violations: make(chan error, 256), closedErr: make(chan error, 16), refreshed: make(chan *nats.Conn, 4)}
	t.Cleanup(func() {
		w.mu.Lock()
		if w.cur != nil {
			w.cur.nc.Close()
		}
		w.mu.Unlock()
		w.wg.Wait()
		k.Close()
	})
	return w
}

func (w *tworker) dial(ep *enclave.Epoch) (*nats.Conn, error) {
	opts, err := wire.WorkerConnectOptions(ep.ID, ep.SigningPub(), ep.Sign)
	if err != nil {
		return nil, err
	}
	opts = append(opts, nats.Name(w.id), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				select {
				case w.violations <- err:
				default:
				}
			}
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				select {
				case w.closedErr <- err:
				default:
				}
			}
		}))
	if w.cooperative {
		opts = append(opts, nats.LameDuckModeHandler(func(*nats.Conn) {
			w.wg.Add(1)
			go func() { defer w.wg.Done(); w.refresh() }()
		}))
	}
	return nats.Connect(w.e.srv.ClientURL(), opts...)
}

// submit submits a bundle on the submit subject of its own key (the only
// one the connection presenting that bundle may publish on).
func submit(t testing.TB, nc *nats.Conn, raw []byte) wire.AdmissionStatus {
	t.Helper()
	return askAdmission(t, nc, wire.SubmitSubject(bundleNKey(t, raw)), raw)
}

// storeVia hands a bundle to the admission service over an admitted
// connection whose key is the bundle prev's.
func storeVia(t testing.TB, nc *nats.Conn, prev, raw []byte) wire.AdmissionStatus {
	t.Helper()
	return askAdmission(t, nc, wire.EvidenceSubject(bundleNKey(t, prev)), raw)
}

func bundleNKey(t testing.TB, raw []byte) string {
	t.Helper()
	b, err := attest.DecodeBundle(raw)
	if err != nil {
		t.Fatal(err)
	}
	nk, err := wire.NKeyOfBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	return nk
}

func askAdmission(t testing.TB, nc *nats.Conn, subject string, raw []byte) wire.AdmissionStatus {
	t.Helper()
	m, err := nc.Request(subject, raw, 5*time.Second)
	if err != nil {
		t.Fatalf("submitting evidence: %v", err)
	}
	var st wire.AdmissionStatus
	if err := json.Unmarshal(m.Data, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// join bootstraps: the first connection is quarantined (no evidence yet),
// submits the bundle and closes; the second is judged on the stored
// evidence and serves (or tries to, if refused).
func (w *tworker) join() wire.AdmissionStatus {
	w.t.Helper()
	ep := w.keeper.Current()
	nc, err := w.dial(ep)
	if err != nil {
		w.t.Fatalf("bootstrap connection: %v", err)
	}
	st := submit(w.t, nc, ep.Raw)
	nc.Close()
	if err := w.serveOn(ep); err != nil {
		w.t.Fatal(err)
	}
	return st
}

func (w *tworker) serveOn(ep *enclave.Epoch) error {
	nc, err := w.dial(ep)
	if err != nil {
		return err
	}
	sv := &serving{nc: nc, epoch: ep.ID}
	svc, err := micro.AddService(nc, micro.Config{Name: wire.ServiceName, Version: "0.1.0"})
	if err != nil {
		nc.Close()
		return err
	}
	sv.svc = svc
	err = svc.AddEndpoint("model-0", micro.HandlerFunc(func(r micro.Request) {
		w.served.Add(1)
		sv.inflight.Add(1)
		go func() {
			defer sv.inflight.Done()
			if w.gate != nil {
				<-w.gate
			}
			_ = r.Respond([]byte(w.id + "/" + sv.epoch))
		}()
	}), micro.WithEndpointSubject(wire.InferSubject(testModel)), micro.WithEndpointQueueGroup(wire.QueueGroup))
	if err != nil {
		nc.Close()
		return err
	}
	if err := nc.Flush(); err != nil {
		return err
	}
	w.mu.Lock()
	w.cur = sv
	w.mu.Unlock()
	return nil
}

// refresh: new epoch, stored over the old connection, serve on a new one,
// then retire the old one without dropping its requests.
func (w *tworker) refresh() {
	w.mu.Lock()
	old := w.cur
	w.mu.Unlock()
	prev := w.keeper.Current().Raw
	ep, err := w.keeper.Rotate(context.Background())
	if err != nil {
		w.t.Error(err)
		return
	}
	if st := storeVia(w.t, old.nc, prev, ep.Raw); st.Allow && st.Error == "" {
		if err := w.serveOn(ep); err != nil {
			w.t.Error(err)
			return
		}
	}
	_ = old.svc.Stop() // no new requests on the old connection
	old.inflight.Wait()
	old.nc.Close()
	w.mu.Lock()
	cur := w.cur
	w.mu.Unlock()
	w.refreshed <- cur.nc
}

// waitFor polls cond; tests wait on state, never on fixed sleeps.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}
