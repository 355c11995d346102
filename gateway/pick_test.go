package gateway

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/internal/natsembed"
	"github.com/teegate/teegate/worker/wire"
)

// capDir is a capacityDirectory over fixed replicas.
type capDir struct {
	fakeDir
	reps    []Replica
	changed chan struct{}
}

func (d *capDir) Replicas(model string) []Replica {
	var out []Replica
	for _, r := range d.reps {
		if r.Record.Routable() && r.Record.Serves(model) {
			out = append(out, r)
		}
	}
	return out
}
func (d *capDir) Ready() bool {
	for _, r := range d.reps {
		if r.Record.Routable() {
			return true
		}
	}
	return false
}
func (d *capDir) Changed() <-chan struct{} { return d.changed }

func replica(key string, limit, inFlight int, models ...string) Replica {
	rec := wire.WorkerRecord{ID: "w-" + key, EvidenceID: key, MaxConcurrency: limit, InFlight: inFlight, Ready: true}
	for _, m := range models {
		rec.Models = append(rec.Models, wire.ModelInfo{ID: m})
	}
	return Replica{Key: key, Record: rec}
}

func pickGateway(d Directory) *Gateway {
	return &Gateway{cfg: Config{Directory: d}, picker: newPicker()}
}

func TestPickWithoutCapacityData(t *testing.T) {
	g := pickGateway(fakeDir{})
	l, ok, _ := g.pick("m", nil)
	if !ok || l.Subject != wire.InferSubject("m") || l.Key != "" {
		t.Fatalf("pick = %+v, %v", l, ok)
	}
	l.Release() // counts nothing, must not panic
	var nilLease *lease
	nilLease.Release()
}

func TestPickNeverExceedsConcurrency(t *testing.T) {
	d := &capDir{reps: []Replica{replica("a", 2, 0, "m"), replica("b", 2, 0, "m"), replica("c", 5, 0, "other")}, changed: make(chan struct{})}
	g := pickGateway(d)
	var held []*lease
	per := map[string]int{}
	for range 4 {
		l, ok, _ := g.pick("m", nil)
		if !ok {
			t.Fatalf("pick %d found no slot", len(held))
		}
		if l.Subject != wire.DirectSubject("m", l.Key) {
			t.Fatalf("subject %q for key %q", l.Subject, l.Key)
		}
		per[l.Key]++
		held = append(held, l)
	}
	if per["a"] != 2 || per["b"] != 2 {
		t.Fatalf("spread %v, want 2 on each", per)
	}
	if l, ok, full := g.pick("m", nil); ok || !full {
		t.Fatalf("a fifth pick on two replicas of 2: %+v, ok %v, full %v", l, ok, full)
	}
	held[0].Release()
	held[0].Release() // a second release gives back nothing more
	l, ok, _ := g.pick("m", nil)
	if !ok || l.Key != held[0].Key {
		t.Fatalf("after a release: %+v, %v", l, ok)
	}
	if _, ok, _ := g.pick("m", nil); ok {
		t.Fatal("a double release freed two slots")
	}
	for _, l := range append(held[1:], l) {
		l.Release()
	}
	if n := g.picker.inFlight("a") + g.picker.inFlight("b"); n != 0 {
		t.Fatalf("%d left counted after every release", n)
	}
	// Unknown model, and every replica tried: nothing, not full.
	if _, ok, full := g.pick("nope", nil); ok || full {
		t.Fatal("picked a replica for a model none serves")
	}
	if _, ok, full := g.pick("m", map[string]bool{"a": true, "b": true}); ok || full {
		t.Fatal("picked a replica already tried")
	}
}

func TestPickPrefersAdvertisedSpare(t *testing.T) {
	// a is nearly full by other gateways' requests; b is idle.
	d := &capDir{reps: []Replica{replica("a", 10, 9, "m"), replica("b", 10, 0, "m")}, changed: make(chan struct{})}
	g := pickGateway(d)
	for range 5 {
		l, ok, _ := g.pick("m", nil)
		if !ok || l.Key != "b" {
			t.Fatalf("picked %+v, want b", l)
		}
	}
	// Not ready and draining records are not replicas.
	notReady := replica("c", 10, 0, "m")
	notReady.Record.Ready = false
	draining := replica("d", 10, 0, "m")
	draining.Record.Draining = true
	d.reps = []Replica{notReady, draining}
	if _, ok, full := g.pick("m", nil); ok || full {
		t.Fatal("picked a replica that is not ready or drains")
	}
	if d.Ready() {
		t.Fatal("ready with no routable replica")
	}
}

func TestAwaitLease(t *testing.T) {
	d := &capDir{reps: []Replica{replica("a", 1, 0, "m")}, changed: make(chan struct{})}
	g := pickGateway(d)
	first, ok := g.awaitLease(context.Background(), "m", nil)
	if !ok {
		t.Fatal("no lease on an idle replica")
	}
	got := make(chan *lease)
	go func() {
		l, _ := g.awaitLease(context.Background(), "m", nil)
		got <- l
	}()
	first.Release()
	select {
	case l := <-got:
		if l == nil || l.Key != "a" {
			t.Fatalf("waiter got %+v", l)
		}
		l.Release()
	case <-time.After(10 * time.Second):
		t.Fatal("a waiter was not woken by a release")
	}
	// No replica at all: no wait.
	if _, ok := g.awaitLease(context.Background(), "other", nil); ok {
		t.Fatal("leased a model nobody serves")
	}
	// Full until the context ends.
	hold, _ := g.awaitLease(context.Background(), "m", nil)
	defer hold.Release()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, ok := g.awaitLease(ctx, "m", nil); ok {
		t.Fatal("leased a full replica")
	}
}

// A request whose replica sent no accept in time waits on for it only
// while that replica is still listed and no replica it has not tried
// serves the model; otherwise it fails over (errLost).
func TestOnlyChoice(t *testing.T) {
	alone := &capDir{reps: []Replica{replica("a", 1, 1, "m")}}
	notReady := replica("b", 4, 0, "m")
	notReady.Record.Ready = false
	two := &capDir{reps: []Replica{replica("a", 1, 1, "m"), replica("b", 4, 4, "m")}}
	for _, c := range []struct {
		name  string
		dir   Directory
		key   string
		tried map[string]bool
		want  bool
	}{
		{"the only replica", alone, "a", nil, true},
		{"the only replica, tried before", alone, "a", map[string]bool{"a": true}, true},
		{"another replica not tried, even full", two, "a", nil, false},
		{"the other replica tried already", two, "a", map[string]bool{"b": true}, true},
		{"the replica no longer listed", &capDir{reps: []Replica{replica("b", 4, 0, "m")}}, "a", nil, false},
		{"the replica no longer routable", &capDir{reps: []Replica{notReady}}, "b", nil, false},
		{"another model's replica", &capDir{reps: []Replica{replica("a", 1, 1, "m"), replica("c", 4, 0, "x")}}, "a", nil, true},
		{"the queue group", alone, "", nil, false},
		{"no capacity data", fakeDir{}, "a", nil, false},
	} {
		if got := pickGateway(c.dir).onlyChoice("m", c.key, c.tried); got != c.want {
			t.Errorf("%s: onlyChoice = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestReadyz(t *testing.T) {
	srv, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("gw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	down := replica("a", 2, 0, "m")
	down.Record.Ready = false
	d := &capDir{reps: []Replica{down}, changed: make(chan struct{})}
	for _, tc := range []struct {
		without bool
		ready   bool
		want    int
	}{{false, false, 503}, {false, true, 200}, {true, false, 200}} {
		d.reps[0].Record.Ready = tc.ready
		g, err := New(Config{Conn: nc, Keys: fakeKeys{}, Directory: d, ReadyWithoutWorkers: tc.without})
		if err != nil {
			t.Fatal(err)
		}
		if st, body := do(t, g, "GET", "/readyz", "", ""); st != tc.want {
			t.Fatalf("ready %v, without workers %v: %d %s", tc.ready, tc.without, st, body)
		}
	}
}

// KVDirectory's replicas are the live, routable records serving the model,
// keyed by registry key.
func TestKVDirectoryReplicas(t *testing.T) {
	srv, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("dir")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	d, err := OpenDirectory(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	kv, err := js.KeyValue(ctx, wire.RegistryBucket)
	if err != nil {
		t.Fatal(err)
	}
	put := func(key string, r Replica) {
		b, _ := json.Marshal(r.Record)
		if _, err := kv.Put(ctx, key, b); err != nil {
			t.Fatal(err)
		}
	}
	ready := replica("ev1", 4, 1, "m")
	notReady := replica("ev2", 4, 0, "m")
	notReady.Record.Ready = false
	changed := d.Changed()
	put("ev1", ready)
	put("ev2", notReady)
	put("ev3", replica("ev-other", 4, 0, "m")) // key is neither its evidence nor its id
	// A worker older than capacity routing writes no "ready".
	if _, err := kv.Put(ctx, "old", []byte(`{"id":"old","version":"1","models":[{"id":"legacy-model"}],"max_concurrency":8}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("no change signalled")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		next := d.Changed() // before looking, so no change is missed
		if _, ok := d.Model("m"); ok && len(d.Replicas("m")) == 1 {
			break
		}
		select {
		case <-next:
		case <-time.After(time.Until(deadline)):
			t.Fatalf("replicas %+v", d.Replicas("m"))
		}
	}
	if r := d.Replicas("m")[0]; r.Key != "ev1" || r.Record.InFlight != 1 || !d.Ready() {
		t.Fatalf("replica %+v", r)
	}
	legacyListed := func() bool { r := d.Replicas("legacy-model"); return len(r) == 1 && r[0].Legacy && r[0].Record.Ready }
	for {
		next := d.Changed()
		if legacyListed() {
			break
		}
		select {
		case <-next:
		case <-time.After(time.Until(deadline)):
			t.Fatalf("legacy replicas %+v", d.Replicas("legacy-model"))
		}
	}
	g := pickGateway(d)
	if l, ok, _ := g.pick("legacy-model", nil); !ok || l.Subject != wire.InferSubject("legacy-model") || l.Key != "old" {
		t.Fatalf("legacy pick %+v", l)
	}
	if len(d.Replicas("other")) != 0 {
		t.Fatal("a replica for a model its record does not list")
	}
	d.now = func() time.Time { return time.Now().Add(2 * wire.RecordTTL) }
	if len(d.Replicas("m")) != 0 || d.Ready() {
		t.Fatal("an expired record is still a replica")
	}
}
