package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/gateway/admission"
	"github.com/teegate/teegate/internal/natsembed"
	"github.com/teegate/teegate/internal/stack"
	"github.com/teegate/teegate/internal/stacktest"
	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/engine/builtin"
	"github.com/teegate/teegate/worker/wire"
)

// A restart comes up whatever the buckets hold: evidence and decision
// buckets left full (tight caps that refuse new writes, as a flood on an
// older version left them) are brought back to their bounds, discard their
// oldest entries, and the worker is admitted and answers.
func TestRestartWithFullBuckets(t *testing.T) {
	dir := t.TempDir()
	cfg := func() stack.Config {
		return stack.Config{DataDir: dir, APIKey: stacktest.APIKey, TEE: stack.TEEConfig{QuoteDelay: -1},
			Engines: []engine.Engine{stacktest.Builtin(t, builtin.Config{})}}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	s, err := stack.Start(ctx, cfg())
	if err != nil {
		t.Fatal(err)
	}
	s.Close(ctx)

	// Fill the buckets, with caps that refuse new entries when full.
	srv, err := natsembed.Start(natsembed.Config{StoreDir: filepath.Join(dir, "nats"), Auth: &natsembed.Auth{}})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := srv.Connect("filler")
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	for _, b := range []string{wire.EvidenceBucket, admission.DecisionBucket} {
		st, err := js.Stream(ctx, "KV_"+b)
		if err != nil {
			t.Fatal(err)
		}
		sc := st.CachedInfo().Config
		sc.MaxBytes, sc.Discard = 256<<10, jetstream.DiscardNew
		if _, err := js.UpdateStream(ctx, sc); err != nil {
			t.Fatal(err)
		}
		kv, err := js.KeyValue(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		full := false
		for i := 0; i < 1000 && !full; i++ {
			_, err := kv.Put(ctx, fmt.Sprintf("%064x", i), make([]byte, 16<<10))
			full = err != nil
		}
		if !full {
			t.Fatalf("bucket %s never filled", b)
		}
	}
	nc.Close()
	srv.Shutdown()

	s, err = stack.Start(ctx, cfg())
	if err != nil {
		t.Fatalf("restart with full buckets: %v", err)
	}
	defer s.Close(context.Background())
	if !s.Workers[0].Admission().Admitted {
		t.Fatalf("worker not admitted after the restart: %+v", s.Workers[0].Admission())
	}
	if r, b := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, chatBody("teegate-builtin", false), "Teegate-Nonce", "after-restart"); r.StatusCode != 200 {
		t.Fatalf("fresh mode after the restart: %d %s", r.StatusCode, b)
	}
}

// A full bucket forgets its oldest entries; it never refuses a write.
func TestFullBucketDiscardsOldest(t *testing.T) {
	srv, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect("t")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := wire.EnsureBucket(t.Context(), js, jetstream.KeyValueConfig{Bucket: "tiny", MaxBytes: 64 << 10, MaxValueSize: 8 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 64 {
		if _, err := kv.Put(t.Context(), fmt.Sprintf("k%03d", i), make([]byte, 4<<10)); err != nil {
			t.Fatalf("write %d into a full bucket: %v", i, err)
		}
	}
	if _, err := kv.Get(t.Context(), "k000"); err == nil {
		t.Fatal("the oldest entry was kept past the cap")
	}
	if _, err := kv.Put(t.Context(), "big", make([]byte, 16<<10)); err == nil {
		t.Fatal("a value over the value cap was stored")
	}
}
