package admission

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/policies"
	"github.com/teegate/teegate/worker/wire"
)

// TestRegoDevPolicyAdmitsSimulated runs the shipped dev policy through the
// adapter: simulated evidence is admitted, the production policy refuses
// it with its own reasons.
func TestRegoDevPolicyAdmitsSimulated(t *testing.T) {
	dev, err := policies.Builtin("dev")
	if err != nil {
		t.Fatal(err)
	}
	prod, err := policies.Builtin("production")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) { c.Policy = Rego(dev) })
	w := newWorker(t, e, "w1", nil)
	if st := w.join(); !st.Allow {
		t.Fatalf("dev policy: %+v", st)
	}
	if got := request(t, e.gw, 3); got["w1"] != 3 {
		t.Fatalf("answers %v", got)
	}
	if err := e.svc.Reload(t.Context(), Rego(prod)); err != nil {
		t.Fatal(err)
	}
	d := e.svc.Decisions()[0]
	if d.Allow || len(d.Reasons) == 0 || d.Policy == "" || d.Policy[:len("production@")] != "production@" {
		t.Fatalf("production decision %+v", d)
	}
}

// benchSetup builds a service and a stored, proven bundle.
func benchSetup(b *testing.B, pol Policy) (*Service, proven, []byte) {
	b.Helper()
	e := newEnv(b, func(c *Config) {
		if pol != nil {
			c.Policy = pol
		}
	})
	w := newWorker(b, e, "bench", nil)
	ep := w.keeper.Current()
	if _, err := e.svc.evKV.Put(b.Context(), ep.ID, ep.Raw); err != nil {
		b.Fatal(err)
	}
	nk, _ := wire.WorkerNKey(ep.SigningPub())
	return e.svc, proven{evidenceID: ep.ID, nkey: nk, pub: ep.SigningPub()}, ep.Raw
}

func benchDecide(b *testing.B, pol Policy, cold bool) {
	svc, p, _ := benchSetup(b, pol)
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if cold {
			svc.verifier = attest.NewVerifier(svc.cfg.Verify, 16)
		}
		v := svc.decide(ctx, p, time.Now())
		if !v.admitted() {
			b.Fatal(v.err)
		}
		if _, err := svc.userJWT("UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4", v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecideCached is the callout's steady state: the bundle's verdict
// is cached, so a connect costs the policy and the JWT.
func BenchmarkDecideCached(b *testing.B) { benchDecide(b, nil, false) }

// BenchmarkDecideCachedRego is the same with the shipped dev Rego policy.
func BenchmarkDecideCachedRego(b *testing.B) {
	dev, err := policies.Builtin("dev")
	if err != nil {
		b.Fatal(err)
	}
	benchDecide(b, Rego(dev), false)
}

// BenchmarkDecideCold fetches the bundle from the bucket and verifies it
// (simulated TDX quote and chain) on every connect.
func BenchmarkDecideCold(b *testing.B) { benchDecide(b, nil, true) }

// BenchmarkParseCredentials is the key proof alone (one Ed25519 verify).
func BenchmarkParseCredentials(b *testing.B) {
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	c := signedCreds(b, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", sk, "nonce")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseCredentials(c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConnectAdmitted is a whole worker connect over loopback TCP
// through the callout (cached verdict), then close.
func BenchmarkConnectAdmitted(b *testing.B) {
	e := newEnv(b, nil)
	w := newWorker(b, e, "bench", nil)
	ep := w.keeper.Current()
	if _, err := e.svc.evKV.Put(b.Context(), ep.ID, ep.Raw); err != nil {
		b.Fatal(err)
	}
	opts, _ := wire.WorkerConnectOptions(ep.ID, ep.SigningPub(), ep.Sign)
	b.ReportAllocs()
	for b.Loop() {
		nc, err := nats.Connect(e.srv.ClientURL(), opts...)
		if err != nil {
			b.Fatal(err)
		}
		nc.Close()
	}
}
