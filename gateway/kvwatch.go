package gateway

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// kvWatch mirrors a key-value bucket into memory: apply sees every put and
// delete in order. It is how the gateway reads API keys and the worker
// registry on the request path without a round trip to JetStream.
//
// The watch is an ordered consumer on the bucket's stream. When the server
// holding it goes (a node of a cluster is lost) the client recreates it,
// but a recreation refused while the cluster elects new leaders ends the
// watch for good, silently, and the mirror would freeze: the registry's
// records would age out and the gateway stop routing. So the watch checks
// every kvWatchCheck that it keeps up with the stream, and when it fell
// behind for two checks in a row it watches anew: the bucket's current
// contents replace the mirror's (keys that went meanwhile are deleted).
type kvWatch struct {
	stop context.CancelFunc
	done chan struct{}
}

// kvWatchCheck is how often a watch compares its position with the
// stream's.
var kvWatchCheck = 2 * time.Second

// watchBucket starts mirroring kv and returns once the bucket's current
// contents were applied (or ctx ended). apply is called from one goroutine.
func watchBucket(ctx context.Context, kv jetstream.KeyValue, what string, apply func(jetstream.KeyValueEntry)) (*kvWatch, error) {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m := &mirror{kv: kv, apply: apply, keys: map[string]bool{}}
	w, err := kv.WatchAll(wctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watching %s: %w", what, err)
	}
	kw := &kvWatch{stop: cancel, done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		defer close(kw.done)
		m.run(wctx, w, ready)
	}()
	select {
	case <-ready:
		return kw, nil
	case <-ctx.Done():
		kw.close()
		return nil, fmt.Errorf("loading %s: %w", what, ctx.Err())
	}
}

func (kw *kvWatch) close() {
	kw.stop()
	<-kw.done
}

// mirror is one bucket's watch and what it applied.
type mirror struct {
	kv    jetstream.KeyValue
	apply func(jetstream.KeyValueEntry)
	mu    sync.Mutex
	keys  map[string]bool // keys whose last applied entry is a put
	rev   uint64          // the stream sequence of the last entry seen
}

// run applies w's entries, closing ready after the initial contents, and
// watches anew whenever w stops keeping up, until ctx ends.
func (m *mirror) run(ctx context.Context, w jetstream.KeyWatcher, ready chan struct{}) {
	t := time.NewTicker(kvWatchCheck)
	defer t.Stop()
	var snapshot map[string]bool // keys of a new watch's initial contents
	behind, last := 0, uint64(0)
	for {
		select {
		case <-ctx.Done():
			_ = w.Stop()
			return
		case e, ok := <-w.Updates():
			if !ok {
				w = m.rewatch(ctx, w, &snapshot)
				continue
			}
			if e == nil { // the initial values are all delivered
				if ready != nil {
					close(ready)
					ready = nil
				}
				if snapshot != nil {
					m.dropMissing(snapshot)
					snapshot = nil
				}
				continue
			}
			if snapshot != nil {
				snapshot[e.Key()] = true
			}
			m.seen(e)
		case <-t.C:
			// Behind and not moving: a busy bucket is always a little
			// behind its stream, a dead watch does not move at all.
			rev := m.revision()
			if m.caughtUp(ctx) || rev != last {
				behind, last = 0, rev
				continue
			}
			if behind++; behind >= 2 {
				behind = 0
				w = m.rewatch(ctx, w, &snapshot)
			}
		}
	}
}

func (m *mirror) seen(e jetstream.KeyValueEntry) {
	m.mu.Lock()
	if e.Operation() == jetstream.KeyValuePut {
		m.keys[e.Key()] = true
	} else {
		delete(m.keys, e.Key())
	}
	m.rev = max(m.rev, e.Revision())
	m.mu.Unlock()
	m.apply(e)
}

func (m *mirror) revision() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rev
}

// caughtUp: the watch has seen every message the stream holds (or the
// stream cannot be asked now, which is no reason to watch anew).
func (m *mirror) caughtUp(ctx context.Context) bool {
	cctx, cancel := context.WithTimeout(ctx, kvWatchCheck)
	defer cancel()
	st, err := m.kv.Status(cctx)
	if err != nil {
		return true
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return bs.StreamInfo().State.LastSeq <= m.rev
}

// rewatch replaces w by a new watch; snapshot collects its initial keys.
// Until one can be made it returns a watcher with no updates, and the next
// check tries again.
func (m *mirror) rewatch(ctx context.Context, w jetstream.KeyWatcher, snapshot *map[string]bool) jetstream.KeyWatcher {
	_ = w.Stop()
	nw, err := m.kv.WatchAll(ctx)
	if err != nil {
		return idleWatcher{}
	}
	*snapshot = map[string]bool{}
	return nw
}

// dropMissing deletes, in the mirror, the keys a new watch's initial
// contents no longer have.
func (m *mirror) dropMissing(snapshot map[string]bool) {
	m.mu.Lock()
	var gone []string
	for k := range m.keys {
		if !snapshot[k] {
			gone = append(gone, k)
			delete(m.keys, k)
		}
	}
	m.mu.Unlock()
	for _, k := range gone {
		m.apply(deletedEntry{bucket: m.kv.Bucket(), key: k})
	}
}

// idleWatcher delivers nothing (a watch that could not be made).
type idleWatcher struct{}

func (idleWatcher) Updates() <-chan jetstream.KeyValueEntry { return nil }
func (idleWatcher) Stop() error                             { return nil }

// deletedEntry is a delete the mirror infers: the key is gone from the
// bucket's current contents.
type deletedEntry struct {
	bucket, key string
}

func (d deletedEntry) Bucket() string                  { return d.bucket }
func (d deletedEntry) Key() string                     { return d.key }
func (d deletedEntry) Value() []byte                   { return nil }
func (d deletedEntry) Revision() uint64                { return 0 }
func (d deletedEntry) Created() time.Time              { return time.Time{} }
func (d deletedEntry) Delta() uint64                   { return 0 }
func (d deletedEntry) Operation() jetstream.KeyValueOp { return jetstream.KeyValueDelete }
