package gateway

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/internal/natsembed"
)

// deadWatcher delivers what it is given, then nothing: a watch whose
// consumer was lost and could not be recreated.
type deadWatcher struct{ ch chan jetstream.KeyValueEntry }

func (d deadWatcher) Updates() <-chan jetstream.KeyValueEntry { return d.ch }
func (d deadWatcher) Stop() error                             { return nil }

// A watch that stops delivering is noticed (the stream moved on, the watch
// did not) and replaced: the mirror catches up with puts and deletes made
// while it was frozen.
func TestKVWatchRecoversFromADeadWatch(t *testing.T) {
	old := kvWatchCheck
	kvWatchCheck = 20 * time.Millisecond
	defer func() { kvWatchCheck = old }()
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
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "watched"})
	if err != nil {
		t.Fatal(err)
	}
	dead := deadWatcher{ch: make(chan jetstream.KeyValueEntry, 4)}
	for _, k := range []string{"a", "b"} {
		if _, err := kv.Put(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
		e, err := kv.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		dead.ch <- e
	}
	dead.ch <- nil
	var mu sync.Mutex
	got := map[string]bool{}
	m := &mirror{kv: kv, keys: map[string]bool{}, apply: func(e jetstream.KeyValueEntry) {
		mu.Lock()
		defer mu.Unlock()
		if e.Operation() == jetstream.KeyValuePut {
			got[e.Key()] = true
		} else {
			delete(got, e.Key())
		}
	}}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	ready := make(chan struct{})
	go func() { defer close(done); m.run(rctx, dead, ready) }()
	defer func() { cancel(); <-done }()
	<-ready
	if err := kv.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "c", []byte("c")); err != nil {
		t.Fatal(err)
	}
	has := func(want func(map[string]bool) bool) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return want(got)
		}
	}
	eventually(t, 10*time.Second, has(func(m map[string]bool) bool { return len(m) == 2 && m["b"] && m["c"] }), "the mirror to hold b and c")
	// Live again: a later put arrives through the new watch.
	if _, err := kv.Put(ctx, "d", []byte("d")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, has(func(m map[string]bool) bool { return m["d"] }), "a put after the recovery")
}
