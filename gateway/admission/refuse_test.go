package admission

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/claims"
	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/enclave/sim"
	"github.com/teegate/teegate/worker/wire"
)

func TestWrongKeyProofRefused(t *testing.T) {
	e := newEnv(t, nil)
	good := newWorker(t, e, "good", nil)
	good.join()
	ep := good.keeper.Current()
	nk, _ := wire.WorkerNKey(ep.SigningPub())
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	otherNK, _ := wire.WorkerNKey(otherKey.Public().(ed25519.PublicKey))
	signOther := func(nonce []byte) ([]byte, error) {
		return ed25519.Sign(otherKey, wire.ConnectSigningInput(nonce)), nil
	}

	tests := []struct {
		name string
		opts []nats.Option
	}{
		{"signature by another key", []nats.Option{nats.UserInfo(ep.ID, ""), nats.Nkey(nk, signOther)}},
		{"own key, someone else's evidence", []nats.Option{nats.UserInfo(ep.ID, ""), nats.Nkey(otherNK, signOther)}},
		{"nonce signed without the domain", []nats.Option{nats.UserInfo(ep.ID, ""), nats.Nkey(nk, ep.Sign)}},
		{"flipped signature byte", []nats.Option{nats.UserInfo(ep.ID, ""), nats.Nkey(nk, func(n []byte) ([]byte, error) {
			sig, err := ep.Sign(wire.ConnectSigningInput(n))
			sig[7] ^= 1
			return sig, err
		})}},
		{"user name is not an evidence id", []nats.Option{nats.UserInfo("good", ""), nats.Nkey(nk, func(n []byte) ([]byte, error) { return ep.Sign(wire.ConnectSigningInput(n)) })}},
		{"no nkey at all", []nats.Option{nats.UserInfo(ep.ID, "password")}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, err := nats.Connect(e.srv.ClientURL(), append(tt.opts, nats.MaxReconnects(0))...)
			if err == nil {
				nc.Close()
				t.Fatal("connection admitted")
			}
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Fatalf("got %v", err)
			}
			if got := e.svc.Stats().Refused; got != int64(i+1) {
				t.Fatalf("refused count %d", got)
			}
		})
	}
	// Refusals leave no record: only verified evidence has decisions.
	if ds := e.svc.Decisions(); len(ds) != 1 || !ds[0].Allow {
		t.Fatalf("decisions %+v", ds)
	}
}

func signedCreds(t testing.TB, id string, sk ed25519.PrivateKey, nonce string) credentials {
	nk, err := wire.WorkerNKey(sk.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	sig := ed25519.Sign(sk, wire.ConnectSigningInput([]byte(nonce)))
	return credentials{EvidenceID: id, NKey: nk, Sig: base64.RawURLEncoding.EncodeToString(sig), Nonce: nonce}
}

func TestParseCredentials(t *testing.T) {
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	id := strings.Repeat("ab", 32)
	good := signedCreds(t, id, sk, "nonce-1")
	if p, err := parseCredentials(good); err != nil || p.evidenceID != id {
		t.Fatalf("good credentials: %v", err)
	}
	padded := good
	padded.Sig = base64.URLEncoding.EncodeToString(mustB64(t, good.Sig))
	if _, err := parseCredentials(padded); err != nil {
		t.Fatalf("padded signature: %v", err)
	}
	flip := func(s string, i int) string { b := []byte(s); b[i] ^= 1; return string(b) }
	sigBytes := mustB64(t, good.Sig)
	sigBytes[0] ^= 1
	tests := []struct {
		name string
		mut  func(*credentials)
		want error
	}{
		{"id too short", func(c *credentials) { c.EvidenceID = id[:63] }, ErrCredentials},
		{"id uppercase", func(c *credentials) { c.EvidenceID = strings.ToUpper(id) }, ErrCredentials},
		{"id not hex", func(c *credentials) { c.EvidenceID = "g" + id[1:] }, ErrCredentials},
		{"nkey checksum", func(c *credentials) { c.NKey = flip(c.NKey, 10) }, ErrCredentials},
		{"nkey of an account", func(c *credentials) { c.NKey = "A" + c.NKey[1:] }, ErrCredentials},
		{"no nonce", func(c *credentials) { c.Nonce = "" }, ErrCredentials},
		{"no signature", func(c *credentials) { c.Sig = "" }, ErrCredentials},
		{"signature not base64", func(c *credentials) { c.Sig = "!!" + c.Sig[2:] }, ErrCredentials},
		{"signature short", func(c *credentials) { c.Sig = c.Sig[:40] }, ErrCredentials},
		{"signature byte flipped", func(c *credentials) { c.Sig = base64.RawURLEncoding.EncodeToString(sigBytes) }, ErrKeyProof},
		{"other nonce", func(c *credentials) { c.Nonce = "nonce-2" }, ErrKeyProof},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mut(&c)
			if _, err := parseCredentials(c); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func mustB64(t testing.TB, s string) []byte {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func FuzzParseCredentials(f *testing.F) {
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	c := signedCreds(f, strings.Repeat("0f", 32), sk, "abc")
	f.Add(c.EvidenceID, c.NKey, c.Sig, c.Nonce)
	f.Add("", "", "", "")
	f.Add(strings.Repeat("a", 64), "UAAAA", "====", "n")
	f.Fuzz(func(t *testing.T, id, nk, sig, nonce string) {
		p, err := parseCredentials(credentials{EvidenceID: id, NKey: nk, Sig: sig, Nonce: nonce})
		if err == nil && (p.evidenceID != id || len(p.pub) != ed25519.PublicKeySize) {
			t.Fatalf("accepted inconsistent credentials")
		}
		if err != nil && !errors.Is(err, ErrCredentials) && !errors.Is(err, ErrKeyProof) {
			t.Fatalf("untyped error %v", err)
		}
	})
}

// TestDecide checks every quarantine reason on the decision path, with the
// clock under test control.
func TestDecide(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	clock := func() time.Time { return now }
	var pol Policy = pinPolicy()
	e := newEnv(t, func(c *Config) {
		c.Now = clock
		c.Verify.MaxAge = time.Hour
		c.Lease = 2 * time.Hour
		c.Policy = PolicyFunc(func(ctx context.Context, cl *claims.Claims, at time.Time) (bool, []string, error) {
			return pol.Evaluate(ctx, cl, at)
		})
	})
	mk := func(id string, models []string, m bool) *enclave.Epoch {
		a, err := sim.NewAttester(sim.Config{Root: testRoot(t), QuoteDelay: sim.NoDelay})
		if err != nil {
			t.Fatal(err)
		}
		k, err := enclave.NewKeeper(t.Context(), enclave.KeeperConfig{Attester: a, Identity: attest.WorkerIdentity{ID: id, Models: models}, Now: clock})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(k.Close)
		ep := k.Current()
		if m {
			if _, err := e.svc.evKV.Put(t.Context(), ep.ID, ep.Raw); err != nil {
				t.Fatal(err)
			}
		}
		return ep
	}
	proof := func(ep *enclave.Epoch) proven {
		nk, _ := wire.WorkerNKey(ep.SigningPub())
		return proven{evidenceID: ep.ID, nkey: nk, pub: ep.SigningPub()}
	}
	good := mk("w1", []string{testModel}, true)
	v := e.svc.decide(t.Context(), proof(good), now)
	if !v.admitted() || !v.expires.Equal(good.Bundle.Created.Add(time.Hour)) {
		t.Fatalf("good: %v, expires %v", v.err, v.expires)
	}

	missing := mk("w2", []string{testModel}, false)
	noModels := mk("w3", nil, true)
	badID := mk("w.4", []string{testModel}, true)
	corrupt := mk("w5", []string{testModel}, true)
	raw := append([]byte(nil), good.Raw...)
	if _, err := e.svc.evKV.Put(t.Context(), corrupt.ID, raw); err != nil { // another bundle's bytes under its id
		t.Fatal(err)
	}
	other := proof(good)
	other.evidenceID = noModels.ID // good's key, another's evidence

	tests := []struct {
		name  string
		p     proven
		at    time.Time
		pol   Policy
		want  error
		cause error
	}{
		{"evidence missing", proof(missing), now, nil, ErrEvidenceMissing, nil},
		{"evidence corrupt", proof(corrupt), now, nil, ErrEvidenceCorrupt, nil},
		{"key of other evidence", other, now, nil, ErrKeyMismatch, nil},
		{"no models", proof(noModels), now, nil, ErrIdentity, nil},
		{"id with a dot", proof(badID), now, nil, ErrIdentity, nil},
		{"policy denies", proof(good), now, denyAll("no"), ErrPolicyDenied, nil},
		{"policy fails", proof(good), now, PolicyFunc(func(context.Context, *claims.Claims, time.Time) (bool, []string, error) {
			return true, nil, errors.New("boom")
		}), ErrPolicyFailed, nil},
		{"expires too soon", proof(good), now.Add(time.Hour - time.Second), nil, ErrExpiring, nil},
		{"expired", proof(good), now.Add(2 * time.Hour), nil, ErrEvidenceRejected, attest.ErrEvidenceExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now = tt.at
			pol = pinPolicy()
			if tt.pol != nil {
				pol = tt.pol
			}
			v := e.svc.decide(t.Context(), tt.p, tt.at)
			if !errors.Is(v.err, tt.want) || tt.cause != nil && !errors.Is(v.err, tt.cause) {
				t.Fatalf("got %v, want %v", v.err, tt.want)
			}
			if !refuses(v.err) && len(v.reasons) == 0 {
				t.Fatal("quarantine without a reason")
			}
		})
	}
	now = time.Now().UTC()
}

// TestPermissions checks what an admitted connection may and may not do,
// beyond serving its models.
func TestPermissions(t *testing.T) {
	e := newEnv(t, nil)
	gjs, _ := jetstream.New(e.gw)
	if _, err := gjs.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: wire.RegistryBucket}); err != nil {
		t.Fatal(err)
	}
	w := newWorker(t, e, "w1", nil)
	w.join()
	w.mu.Lock()
	nc := w.cur.nc
	w.mu.Unlock()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	reg, err := js.KeyValue(ctx, wire.RegistryBucket)
	if err != nil {
		t.Fatalf("binding the registry: %v", err)
	}
	// Its own record is keyed by the evidence it was admitted on.
	if _, err := reg.Put(ctx, w.keeper.Current().ID, []byte(`{}`)); err != nil {
		t.Fatalf("own registry record: %v", err)
	}
	ev, err := jetstream.New(e.gw)
	if err != nil {
		t.Fatal(err)
	}
	evKV, err := ev.KeyValue(ctx, wire.EvidenceBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name string
		do   func(context.Context) error
	}{
		{"its worker id's record", func(ctx context.Context) error { _, err := reg.Put(ctx, "w1", []byte(`{}`)); return err }},
		{"another worker's record", func(ctx context.Context) error {
			_, err := reg.Put(ctx, strings.Repeat("1", 64), []byte(`{}`))
			return err
		}},
		{"writing evidence", func(ctx context.Context) error {
			// Publishing on the bucket's subject directly; binding it needs
			// a stream-info permission the worker has not either.
			_, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			_, err = nc.Request("$KV."+wire.EvidenceBucket+"."+strings.Repeat("0", 64), []byte("x"), 250*time.Millisecond)
			if err != nil {
				return err
			}
			if _, gerr := evKV.Get(ctx, strings.Repeat("0", 64)); gerr == nil {
				return nil
			}
			return errors.New("not stored")
		}},
		{"deleting the registry", func(ctx context.Context) error { return js.DeleteKeyValue(ctx, wire.RegistryBucket) }},
		{"creating a stream", func(ctx context.Context) error {
			_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "x", Subjects: []string{"x"}})
			return err
		}},
		{"reading the decision bucket", func(ctx context.Context) error { _, err := js.KeyValue(ctx, DecisionBucket); return err }},
	} {
		t.Run(f.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
			defer cancel()
			if err := f.do(ctx); err == nil {
				t.Fatal("allowed")
			}
		})
	}
	// Nor may it publish requests to models, or subscribe to another's.
	for len(w.violations) > 0 {
		<-w.violations
	}
	if err := nc.Publish(wire.InferSubject(testModel), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.SubscribeSync(wire.InferSubject("other")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Publish", "Subscription"} {
		select {
		case err := <-w.violations:
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("violation %v, want %s", err, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s violation", want)
		}
	}
}
