package gatewaynode

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"go.uber.org/goleak"

	"github.com/teegate/teegate/enclave/sim"
	"github.com/teegate/teegate/gateway/admission"
	"github.com/teegate/teegate/internal/natsembed"
	"github.com/teegate/teegate/internal/workernode"
	"github.com/teegate/teegate/policies"
	"github.com/teegate/teegate/worker"
	"github.com/teegate/teegate/worker/engine/builtin"

	"github.com/nats-io/nats.go"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// fasthttp's process-wide date updater, and its idle-worker cleaner
		// that notices a stopped server only at its next 10 s tick.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		// The readiness probe's keep-alive connection winds down after the
		// server closes it.
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Two replicas on one server share the fleet policy: a reload on one is
// adopted by the other, and each worker is judged once, by the replica
// that admitted it, not once per replica.
func TestFleetPolicyJudgedOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	issuer, _ := nkeys.CreateAccount()
	pub, _ := issuer.PublicKey()
	srv, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), Auth: &natsembed.Auth{CalloutIssuer: pub}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	var nodes []*Node
	for i := range 2 {
		nc, err := srv.Connect("gw")
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		// No system connection: evicted workers get no notice and stay
		// connected, so the only decisions recorded after the reload are
		// the re-judgements.
		n, err := Start(ctx, Config{Conn: nc, Issuer: issuer, AllowSimulated: true, Name: []string{"a", "b"}[i],
			Admission: admission.Config{Grace: time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close(context.Background())
		nodes = append(nodes, n)
	}
	var workers []*workernode.Node
	for i := range 3 {
		eng, err := builtin.New(builtin.Config{})
		if err != nil {
			t.Fatal(err)
		}
		att, _, err := sim.OpenAttester(t.TempDir(), sim.Config{GPUs: 1, QuoteDelay: sim.NoDelay})
		if err != nil {
			t.Fatal(err)
		}
		w, err := workernode.Start(ctx, workernode.Config{Engine: eng, Attester: att,
			Worker: worker.Config{ID: []string{"w0", "w1", "w2"}[i], RetryInterval: time.Hour},
			Dial:   func(o ...nats.Option) (*nats.Conn, error) { return srv.ConnectBare("w", o...) }})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close(context.Background())
		if !w.Worker.Admission().Admitted {
			t.Fatalf("worker %d not admitted: %v", i, w.Worker.Admission().Reasons)
		}
		workers = append(workers, w)
	}
	// Both replicas list all three decisions, whichever answered the callout.
	for _, n := range nodes {
		eventually(t, "the shared decisions", func() bool { return len(n.Admission.Decisions()) == 3 })
	}
	dec, err := nodes[0].JS.KeyValue(ctx, admission.DecisionBucket)
	if err != nil {
		t.Fatal(err)
	}
	watch, err := dec.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = watch.Stop() }()
	prod, err := policies.Builtin("production")
	if err != nil {
		t.Fatal(err)
	}
	if err := nodes[0].SetPolicy(ctx, prod); err != nil {
		t.Fatal(err)
	}
	eventually(t, "replica b to adopt the policy", func() bool { return nodes[1].Policy.Policy().Hash() == prod.Hash() })
	judged := map[string]int{}
	for len(judged) < 3 {
		select {
		case e := <-watch.Updates():
			if underPolicy(e.Value(), prod.Hash()) {
				judged[e.Key()]++
			}
		case <-ctx.Done():
			t.Fatalf("re-judged %d of 3 workers", len(judged))
		}
	}
	_ = workers
	eventually(t, "three evictions", func() bool {
		return nodes[0].Admission.Stats().Evicted+nodes[1].Admission.Stats().Evicted == 3
	})
	// Nothing more arrives: each evidence was judged once.
	select {
	case e := <-watch.Updates():
		if underPolicy(e.Value(), prod.Hash()) {
			judged[e.Key()]++
		}
	case <-time.After(500 * time.Millisecond):
	}
	for id, c := range judged {
		if c != 1 {
			t.Errorf("evidence %s judged %d times after one reload", id[:12], c)
		}
	}
}

// underPolicy: a stored decision made under the policy with this hash (late
// records of the connections' first judgement do not count).
func underPolicy(raw []byte, hash string) bool {
	var d admission.Decision
	return json.Unmarshal(raw, &d) == nil && strings.HasSuffix(d.Policy, "@"+hash[:12])
}

func TestSharedPolicyTampered(t *testing.T) {
	p, err := policies.Builtin("dev")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := encodePolicy(p, "a", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := decodePolicy(raw); err != nil || got.Hash() != p.Hash() {
		t.Fatalf("round trip: %v", err)
	}
	// Flip a byte in the middle of the value (inside the base64 source).
	bad := append([]byte(nil), raw...)
	i := len(bad) / 2
	if bad[i] == 'A' {
		bad[i] = 'B'
	} else {
		bad[i] = 'A'
	}
	if _, _, err := decodePolicy(bad); !errors.Is(err, ErrSharedPolicy) {
		t.Fatalf("tampered policy: %v", err)
	}
	if _, _, err := decodePolicy([]byte(`{"name":"x","hash":"00","source":""}`)); !errors.Is(err, ErrSharedPolicy) {
		t.Fatalf("wrong hash: %v", err)
	}
}

func FuzzDecodePolicy(f *testing.F) {
	p, _ := policies.Builtin("dev")
	raw, _ := encodePolicy(p, "a", time.Unix(0, 0))
	f.Add(raw)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"name":"x","source":"cGFja2FnZSB4","data":{"a":1e3}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, _, err := decodePolicy(b)
		if err != nil {
			if !errors.Is(err, ErrSharedPolicy) {
				t.Fatalf("error not ErrSharedPolicy: %v", err)
			}
			return
		}
		re, err := encodePolicy(got, "a", time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		again, _, err := decodePolicy(re)
		if err != nil || again.Hash() != got.Hash() {
			t.Fatalf("re-encoded policy: %v", err)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	if err := (&Config{}).Validate(); !errors.Is(err, ErrConfig) {
		t.Fatalf("no conn: %v", err)
	}
}

// An admission-only node (teegate admission) judges workers with no HTTP
// gateway; without the issuer it is refused.
func TestAdmissionOnlyNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	issuer, _ := nkeys.CreateAccount()
	pub, _ := issuer.PublicKey()
	srv, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), Auth: &natsembed.Auth{CalloutIssuer: pub}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect("admission")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := Start(ctx, Config{Conn: nc, AdmissionOnly: true}); !errors.Is(err, ErrConfig) {
		t.Fatalf("admission-only without an issuer: %v", err)
	}
	n, err := Start(ctx, Config{Conn: nc, Issuer: issuer, AllowSimulated: true, AdmissionOnly: true, Name: "adm"})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(context.Background())
	if n.Gateway != nil || n.URL != "" || n.Admission == nil {
		t.Fatalf("admission-only node: gateway %v url %q admission %v", n.Gateway, n.URL, n.Admission)
	}
	eng, err := builtin.New(builtin.Config{})
	if err != nil {
		t.Fatal(err)
	}
	att, _, err := sim.OpenAttester(t.TempDir(), sim.Config{GPUs: 1, QuoteDelay: sim.NoDelay})
	if err != nil {
		t.Fatal(err)
	}
	w, err := workernode.Start(ctx, workernode.Config{Engine: eng, Attester: att, Worker: worker.Config{ID: "w"},
		Dial: func(o ...nats.Option) (*nats.Conn, error) { return srv.ConnectBare("w", o...) }})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	if !w.Worker.Admission().Admitted {
		t.Fatalf("not admitted by the admission-only node: %v", w.Worker.Admission().Reasons)
	}
}
