package gateway

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/worker/wire"
)

// fakeEntry is a registry entry as the watch delivers it.
type fakeEntry struct {
	key   string
	value []byte
	op    jetstream.KeyValueOp
	at    time.Time
}

func (e fakeEntry) Bucket() string                  { return wire.RegistryBucket }
func (e fakeEntry) Key() string                     { return e.key }
func (e fakeEntry) Value() []byte                   { return e.value }
func (e fakeEntry) Revision() uint64                { return 1 }
func (e fakeEntry) Created() time.Time              { return e.at }
func (e fakeEntry) Delta() uint64                   { return 0 }
func (e fakeEntry) Operation() jetstream.KeyValueOp { return e.op }

// Registry values are written by workers, any of which may be hostile: the
// directory never panics on one, lists a record only under its own key,
// and offers as a replica only a record that is ready, not draining, has
// capacity and serves the model.
func FuzzDirectoryApply(f *testing.F) {
	f.Add("w", []byte(`{"id":"w","models":[{"id":"m"}],"max_concurrency":2,"in_flight":1,"ready":true}`), "m")
	f.Add("e", []byte(`{"id":"w","evidence_id":"e","models":[{"id":"m"}],"max_concurrency":0,"ready":true}`), "m")
	f.Add("w", []byte(`{"id":"w","models":[{"id":"m"}],"max_concurrency":4}`), "m")
	f.Add("x", []byte(`{"id":"w","models":[{"id":"m"}],"ready":true,"draining":true,"max_concurrency":-1}`), "m")
	f.Add("w", []byte(`{"ready":null}`), "")
	f.Fuzz(func(t *testing.T, key string, value []byte, model string) {
		now := time.Now()
		d := &KVDirectory{now: func() time.Time { return now }, workers: map[string]wire.WorkerRecord{},
			seen: map[string]time.Time{}, legacy: map[string]bool{}}
		d.changed.init()
		d.apply(fakeEntry{key: key, value: value, op: jetstream.KeyValuePut, at: now})
		for _, r := range d.Replicas(model) {
			if r.Key != key || (r.Key != r.Record.ID && r.Key != r.Record.EvidenceID) {
				t.Fatalf("replica under key %q: %+v", r.Key, r.Record)
			}
			if !r.Record.Ready || r.Record.Draining || r.Record.MaxConcurrency <= 0 || !r.Record.Serves(model) {
				t.Fatalf("not a replica: %+v", r.Record)
			}
		}
		g := pickGateway(d)
		if l, ok, _ := g.pick(model, nil); ok {
			l.Release()
		}
		d.apply(fakeEntry{key: key, op: jetstream.KeyValueDelete, at: now})
		if len(d.Replicas(model)) != 0 || d.Ready() || len(d.legacy) != 0 {
			t.Fatal("a deleted record is still listed")
		}
	})
}
