package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/worker/wire"
)

// Directory knows which models live workers serve.
type Directory interface {
	// Model returns the model's info if a live worker serves it.
	Model(id string) (wire.ModelInfo, bool)
	// Models lists every model a live worker serves, sorted by id.
	Models() []wire.ModelInfo
}

// KVDirectory is a Directory fed by a watch on the worker registry bucket.
// A record counts as live until wire.RecordTTL after its last heartbeat.
type KVDirectory struct {
	now func() time.Time

	mu      sync.RWMutex
	workers map[string]wire.WorkerRecord
	seen    map[string]time.Time
	legacy  map[string]bool // records without capacity data (apply)
	watch   *kvWatch
	changed signal // a record was put or removed
}

// OpenDirectory watches the registry and returns once it is loaded.
func OpenDirectory(ctx context.Context, js jetstream.JetStream) (*KVDirectory, error) {
	kv, err := wire.EnsureBucket(ctx, js, wire.RegistryConfig())
	if err != nil {
		return nil, fmt.Errorf("opening worker registry: %w", err)
	}
	d := &KVDirectory{now: time.Now, workers: map[string]wire.WorkerRecord{}, seen: map[string]time.Time{}, legacy: map[string]bool{}}
	d.changed.init()
	if d.watch, err = watchBucket(ctx, kv, "worker registry", d.apply); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *KVDirectory) apply(e jetstream.KeyValueEntry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	defer d.changed.fire()
	if e.Operation() == jetstream.KeyValuePut {
		var rec wire.WorkerRecord
		// A record is stored under its evidence id (admitted workers may
		// write no other key) or, without admission, its worker id.
		if json.Unmarshal(e.Value(), &rec) == nil && (e.Key() == rec.EvidenceID || e.Key() == rec.ID) {
			// A record without "ready" is from a worker older than
			// capacity routing: it serves only the queue group subjects,
			// and is taken to be ready.
			var probe struct {
				Ready *bool `json:"ready"`
			}
			legacy := json.Unmarshal(e.Value(), &probe) == nil && probe.Ready == nil
			if legacy {
				rec.Ready = true
				d.legacy[e.Key()] = true
			} else {
				delete(d.legacy, e.Key())
			}
			d.workers[e.Key()] = rec
			// Liveness is judged by when we saw the record, not by the
			// worker's clock.
			d.seen[e.Key()] = e.Created()
		}
		return
	}
	delete(d.workers, e.Key())
	delete(d.seen, e.Key())
	delete(d.legacy, e.Key())
}

func (d *KVDirectory) live(id string, now time.Time) bool {
	return now.Sub(d.seen[id]) <= wire.RecordTTL
}

// Model implements Directory.
func (d *KVDirectory) Model(id string) (wire.ModelInfo, bool) {
	now := d.now()
	d.mu.RLock()
	defer d.mu.RUnlock()
	for wid, rec := range d.workers {
		if !d.live(wid, now) {
			continue
		}
		for _, m := range rec.Models {
			if m.ID == id {
				return m, true
			}
		}
	}
	return wire.ModelInfo{}, false
}

// Models implements Directory.
func (d *KVDirectory) Models() []wire.ModelInfo {
	now := d.now()
	d.mu.RLock()
	byID := map[string]wire.ModelInfo{}
	for wid, rec := range d.workers {
		if !d.live(wid, now) {
			continue
		}
		for _, m := range rec.Models {
			if _, ok := byID[m.ID]; !ok {
				byID[m.ID] = m
			}
		}
	}
	d.mu.RUnlock()
	out := make([]wire.ModelInfo, 0, len(byID))
	for _, m := range byID {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Workers returns the live worker records, sorted by id.
func (d *KVDirectory) Workers() []wire.WorkerRecord {
	now := d.now()
	d.mu.RLock()
	out := make([]wire.WorkerRecord, 0, len(d.workers))
	for wid, rec := range d.workers {
		if d.live(wid, now) {
			out = append(out, rec)
		}
	}
	d.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Replicas implements capacityDirectory: the live records that serve
// model and may take new requests (wire.WorkerRecord.Routable), with their
// registry keys.
func (d *KVDirectory) Replicas(model string) []Replica {
	now := d.now()
	d.mu.RLock()
	defer d.mu.RUnlock()
	var out []Replica
	for key, rec := range d.workers {
		if d.live(key, now) && rec.Routable() && rec.Serves(model) {
			out = append(out, Replica{Key: key, Record: rec, Legacy: d.legacy[key]})
		}
	}
	return out
}

// Ready implements capacityDirectory: some live record may take requests.
func (d *KVDirectory) Ready() bool {
	now := d.now()
	d.mu.RLock()
	defer d.mu.RUnlock()
	for key, rec := range d.workers {
		if d.live(key, now) && rec.Routable() {
			return true
		}
	}
	return false
}

// Changed implements capacityDirectory.
func (d *KVDirectory) Changed() <-chan struct{} { return d.changed.wait() }

// Close stops the watch.
func (d *KVDirectory) Close() {
	d.watch.close()
}
