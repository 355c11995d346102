package worker_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/claims"
	"github.com/teegate/teegate/attest/verifiers"
	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/enclave/sim"
	"github.com/teegate/teegate/gateway/admission"
	"github.com/teegate/teegate/internal/enginetest"
	"github.com/teegate/teegate/internal/natsembed"
	"github.com/teegate/teegate/worker"
	"github.com/teegate/teegate/worker/wire"
)

// admEnv is a server with the auth callout, the admission service with a
// switchable policy, and a gateway-side connection.
type admEnv struct {
	srv    *natsembed.Server
	client *nats.Conn
	svc    *admission.Service
	allow  atomic.Bool
	js     jetstream.JetStream
}

func newAdmEnv(t *testing.T, auth bool) *admEnv {
	t.Helper()
	e := &admEnv{}
	e.allow.Store(true)
	cfg := natsembed.Config{StoreDir: t.TempDir()}
	var issuer nkeys.KeyPair
	if auth {
		var err error
		if issuer, err = nkeys.CreateAccount(); err != nil {
			t.Fatal(err)
		}
		pub, _ := issuer.PublicKey()
		cfg.Auth = &natsembed.Auth{CalloutIssuer: pub}
	}
	srv, err := natsembed.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	e.srv = srv
	if e.client, err = srv.Connect("gateway"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.client.Close)
	e.js, _ = jetstream.New(e.client)
	if _, err := worker.EnsureRegistry(t.Context(), e.js); err != nil {
		t.Fatal(err)
	}
	if !auth {
		return e
	}
	conn, err := srv.Connect("admission")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	sys, err := srv.ConnectSystem("admission-sys")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sys.Close)
	e.svc, err = admission.New(admission.Config{
		Conn: conn, Sys: sys, Issuer: issuer, Grace: 10 * time.Second,
		Verify: verifiers.Options(verifiers.Config{AllowSimulated: true}),
		Policy: admission.PolicyFunc(func(context.Context, *claims.Claims, time.Time) (bool, []string, error) {
			if e.allow.Load() {
				return true, nil, nil
			}
			return false, []string{"test policy denies"}, nil
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.svc.Stop)
	return e
}

// newEvidenceWorker starts a worker that connects by its evidence.
func (e *admEnv) newEvidenceWorker(t *testing.T, eng *enginetest.Gated) (*worker.Worker, *enclave.Keeper) {
	t.Helper()
	att, err := sim.NewAttester(sim.Config{Root: simRoot(t), QuoteDelay: sim.NoDelay})
	if err != nil {
		t.Fatal(err)
	}
	var wref atomic.Pointer[worker.Worker]
	k, err := enclave.NewKeeper(t.Context(), enclave.KeeperConfig{
		Attester: att, Identity: attest.WorkerIdentity{ID: "w1", Models: []string{eng.Model}},
		OnRotate: func(ep *enclave.Epoch) {
			if w := wref.Load(); w != nil {
				w.EpochRotated(ep)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	w, err := worker.New(worker.Config{
		Engine: eng, Keeper: k, RetryInterval: 50 * time.Millisecond, Heartbeat: 100 * time.Millisecond, AckTimeout: time.Minute,
		Dial: func(opts ...nats.Option) (*nats.Conn, error) { return e.srv.ConnectBare("w1", opts...) },
	})
	if err != nil {
		t.Fatal(err)
	}
	wref.Store(w)
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	return w, k
}

var simRootP atomic.Pointer[sim.Root]

func simRoot(t *testing.T) *sim.Root {
	if r := simRootP.Load(); r != nil {
		return r
	}
	r, err := sim.NewRoot()
	if err != nil {
		t.Fatal(err)
	}
	simRootP.CompareAndSwap(nil, r)
	return simRootP.Load()
}

func request(nc *nats.Conn) (*nats.Msg, error) {
	m := nats.NewMsg(wire.InferSubject("m"))
	m.Header.Set(wire.HdrVersion, wire.Version)
	m.Header.Set(wire.HdrOp, wire.OpChat)
	m.Header.Set(wire.HdrRequestID, "req_connect")
	m.Data = []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	return nc.RequestMsg(m, 5*time.Second)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

func registryRecord(t *testing.T, e *admEnv) (string, bool) {
	kv, err := e.js.KeyValue(t.Context(), wire.RegistryBucket)
	if err != nil {
		t.Fatal(err)
	}
	// Records are keyed by evidence id: collect w1's.
	keys, err := kv.Keys(t.Context())
	if err != nil {
		return "", false
	}
	var all []string
	for _, k := range keys {
		ent, err := kv.Get(t.Context(), k)
		if err != nil || !strings.Contains(string(ent.Value()), `"id":"w1"`) {
			continue
		}
		if !strings.Contains(string(ent.Value()), k) {
			t.Fatalf("record under %s names other evidence: %s", k, ent.Value())
		}
		all = append(all, string(ent.Value()))
	}
	return strings.Join(all, "\n"), len(all) > 0
}

// The worker joins by its evidence (quarantined, submit, admitted), serves
// with receipts, and on a new epoch moves to a new connection before it
// lets the old one go: a stream in flight on the old connection finishes,
// and the registry record stays.
func TestConnectByEvidenceAndRotate(t *testing.T) {
	e := newAdmEnv(t, true)
	eng := enginetest.NewGated("m")
	w, k := e.newEvidenceWorker(t, eng)
	first := k.Current().ID
	if st := w.Admission(); !st.Admitted || st.Open || st.EvidenceID != first {
		t.Fatalf("admission %+v", st)
	}
	m, err := request(e.client)
	if err != nil || m.Header.Get(wire.HdrStatus) != "200" || m.Header.Get(wire.HdrEvidenceID) != first {
		t.Fatalf("request: %v %v", err, m)
	}
	if rec, ok := registryRecord(t, e); !ok || !strings.Contains(rec, first) {
		t.Fatalf("registry record %q", rec)
	}

	// A stream in flight on the first connection.
	inbox := e.client.NewInbox()
	msgs := make(chan *nats.Msg, 16)
	sub, _ := e.client.ChanSubscribe(inbox, msgs)
	defer sub.Unsubscribe()
	if err := e.client.PublishMsg(streamRequest(8, inbox)); err != nil {
		t.Fatal(err)
	}
	eng.Feed <- []byte(`{"n":1}`)
	<-msgs

	ep, err := k.Rotate(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the worker to serve on the new epoch", func() bool { return w.Admission().EvidenceID == ep.ID })
	eng.Feed <- []byte(`{"n":2}`)
	close(eng.Feed)
	for kind := ""; kind != wire.KindEnd; {
		select {
		case m := <-msgs:
			kind = m.Header.Get(wire.HdrKind)
			if kind == wire.KindError {
				t.Fatalf("stream failed: %s", m.Data)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the stream in flight did not finish")
		}
	}
	m, err = request(e.client)
	if err != nil || m.Header.Get(wire.HdrEvidenceID) != ep.ID {
		t.Fatalf("after rotation: %v %v", err, m)
	}
	eventually(t, "the registry record to name the new epoch", func() bool {
		rec, ok := registryRecord(t, e)
		return ok && strings.Contains(rec, ep.ID)
	})
}

// A refused worker serves nothing and asks again; when the policy changes
// it is admitted. A policy that then turns it away evicts it: its record
// goes and requests find no responders.
func TestRefusedRetriesAndEvicted(t *testing.T) {
	e := newAdmEnv(t, true)
	e.allow.Store(false)
	w, _ := e.newEvidenceWorker(t, enginetest.NewGated("m"))
	if st := w.Admission(); st.Admitted || len(st.Reasons) == 0 || st.Reasons[0] != "test policy denies" {
		t.Fatalf("admission %+v", st)
	}
	if _, err := request(e.client); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("a refused worker answered: %v", err)
	}
	if _, ok := registryRecord(t, e); ok || w.Served() != 0 {
		t.Fatal("a refused worker has a record or served")
	}
	e.allow.Store(true)
	eventually(t, "admission after the policy changed", func() bool { return w.Admission().Admitted })
	if _, err := request(e.client); err != nil {
		t.Fatal(err)
	}
	e.allow.Store(false)
	if err := e.svc.Recheck(t.Context()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "eviction", func() bool { return !w.Admission().Admitted })
	eventually(t, "the record to go", func() bool { _, ok := registryRecord(t, e); return !ok })
	eventually(t, "no responders", func() bool {
		_, err := request(e.client)
		return errors.Is(err, nats.ErrNoResponders)
	})
}

// A server without an admission service accepts the worker's connection
// as it is: the worker serves on it and publishes its evidence itself.
func TestConnectWithoutAdmissionService(t *testing.T) {
	e := newAdmEnv(t, false)
	w, k := e.newEvidenceWorker(t, enginetest.NewGated("m"))
	if st := w.Admission(); !st.Admitted || !st.Open {
		t.Fatalf("admission %+v", st)
	}
	if _, err := request(e.client); err != nil {
		t.Fatal(err)
	}
	kv, err := e.js.KeyValue(t.Context(), wire.EvidenceBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(t.Context(), k.Current().ID); err != nil {
		t.Fatalf("evidence not published: %v", err)
	}
}

func TestEvidenceConfigErrors(t *testing.T) {
	e := newAdmEnv(t, false)
	att, _ := sim.NewAttester(sim.Config{Root: simRoot(t), QuoteDelay: sim.NoDelay})
	k, err := enclave.NewKeeper(t.Context(), enclave.KeeperConfig{Attester: att, Identity: attest.WorkerIdentity{ID: "w1", Models: []string{"other"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	dial := func(opts ...nats.Option) (*nats.Conn, error) { return e.srv.ConnectBare("w", opts...) }
	eng := enginetest.NewGated("m")
	for name, cfg := range map[string]worker.Config{
		"conn and dial":     {Engine: eng, Conn: e.client, Dial: dial, Keeper: k},
		"dial without keys": {Engine: eng, Dial: dial},
		"id not evidence's": {Engine: eng, Dial: dial, Keeper: k, ID: "w2"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := worker.New(cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	w, err := worker.New(worker.Config{Engine: eng, Dial: dial, Keeper: k})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(t.Context()); err == nil || !strings.Contains(err.Error(), "does not name model") {
		t.Fatalf("a model missing from the evidence: %v", err)
	}
}
