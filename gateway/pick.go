package gateway

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/teegate/teegate/worker/wire"
)

// Capacity-aware routing (DESIGN10: "Registry with capacity"). Every
// serving connection advertises its max_concurrency and, refreshed on its
// heartbeat and when it crosses wire.InFlightStep, its in_flight count. The
// gateway picks one connection per request and sends it there alone
// (wire.DirectSubject), never having more requests in flight on a
// connection than its max_concurrency: the count it keeps itself is exact
// for its own requests; the advertised count stands for other gateways'.
// A request that finds every connection full waits for a slot (awaitLease)
// instead of being sent to a worker that would only queue it.

// Replica is one serving connection of a worker as the registry shows it.
type Replica struct {
	// Key is the record's registry key: the evidence id the connection
	// was admitted on, or the worker id.
	Key    string
	Record wire.WorkerRecord
	// Legacy: the record predates capacity routing (no "ready" field):
	// the worker serves no direct subject, so requests picked for it go
	// to the model's queue group (counted against it all the same).
	Legacy bool
}

// capacityDirectory is a Directory that knows the workers' capacity
// (KVDirectory). A Directory without it (static test directories) routes
// every request to the model's queue group.
type capacityDirectory interface {
	// Replicas lists the live records that serve model and may take new
	// requests.
	Replicas(model string) []Replica
	// Ready: some live record may take requests.
	Ready() bool
	// Changed is closed at the next change of the registry.
	Changed() <-chan struct{}
}

// lease is one request's claim on a slot of a replica.
type lease struct {
	// Subject is where the request is published.
	Subject string
	// Key is the replica's registry key ("" for the queue group).
	Key  string
	p    *picker
	done atomic.Bool
}

// Release gives the slot back. It is safe to call more than once and on a
// nil lease.
func (l *lease) Release() {
	if l == nil || l.p == nil || l.done.Swap(true) {
		return
	}
	l.p.release(l.Key)
}

// picker counts this gateway's requests in flight per replica.
type picker struct {
	mu sync.Mutex
	n  map[string]int
	// freed wakes one request waiting for a slot each time one is given
	// back (slotq.go).
	freed slotQueue
}

func newPicker() *picker {
	return &picker{n: map[string]int{}}
}

func (p *picker) release(key string) {
	p.mu.Lock()
	if p.n[key]--; p.n[key] <= 0 {
		delete(p.n, key)
	}
	p.mu.Unlock()
	p.freed.wake()
}

// inFlight is this gateway's count on the replica key.
func (p *picker) inFlight(key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n[key]
}

// pick chooses the replica for a request for model, skipping the keys in
// tried (replicas that answered busy or were gone): among those below their
// concurrency in this gateway's count, the one with the largest share of
// spare capacity by the larger of that count and the advertised one, ties
// broken at random. ok is false when none is left; full says that some
// replica not tried serves model but is at its concurrency (the caller may
// wait: awaitLease). Without a capacityDirectory the lease names the queue
// group subject and counts nothing.
func (g *Gateway) pick(model string, tried map[string]bool) (l *lease, ok, full bool) {
	cd, isCD := g.cfg.Directory.(capacityDirectory)
	if !isCD {
		return &lease{Subject: wire.InferSubject(model)}, true, false
	}
	reps := cd.Replicas(model)
	p := g.picker
	p.mu.Lock()
	defer p.mu.Unlock()
	best, ties := -1, 0
	var bestScore float64
	for i, r := range reps {
		limit := r.Record.MaxConcurrency
		local := p.n[r.Key]
		if tried[r.Key] {
			continue
		}
		if local >= limit {
			full = true
			continue
		}
		est := max(local, r.Record.InFlight)
		score := float64(limit-est) / float64(limit)
		switch {
		case best < 0 || score > bestScore:
			best, bestScore, ties = i, score, 1
		case score == bestScore:
			ties++
			if rand.IntN(ties) == 0 {
				best = i
			}
		}
	}
	if best < 0 {
		return nil, false, full
	}
	key := reps[best].Key
	p.n[key]++
	subject := wire.DirectSubject(model, key)
	if reps[best].Legacy {
		subject = wire.InferSubject(model)
	}
	return &lease{Subject: subject, Key: key, p: p}, true, false
}

// awaitLease is pick that, while every replica serving model is at its
// concurrency, waits for a slot to free up or the registry to change, until
// ctx ends. ok is false when ctx ended first or no replica serves model at
// all (the cold-start queue's case).
func (g *Gateway) awaitLease(ctx context.Context, model string, tried map[string]bool) (*lease, bool) {
	// A free slot, the common case, costs no place among the waiters.
	if l, ok, full := g.pick(model, tried); ok || !full {
		return l, ok
	}
	for {
		// Join the waiters before looking, so no freed slot is missed.
		w := g.picker.freed.join()
		var changed <-chan struct{}
		if cd, ok := g.cfg.Directory.(capacityDirectory); ok {
			changed = cd.Changed()
		}
		l, ok, full := g.pick(model, tried)
		if ok || !full {
			w.leave()
			return l, ok
		}
		select {
		case <-w.C:
		case <-changed:
		case <-ctx.Done():
			w.leave()
			return nil, false
		}
		w.leave()
	}
}

// onlyChoice reports whether the replica key is all a request for model
// has left: it is still a live record that may take requests, and no
// replica this request has not tried serves model. Then a replica that has
// not accepted within AcceptTimeout is waited for instead of failed over:
// its connection is up (a replica whose subscription is gone bounces the
// request: errNobody), and under load it reads the requests queued for it
// in order, late; giving the request up would refuse it while capacity
// exists (no_capacity), and sending it to the same replica again would
// make it queue there twice. A replica that answered busy is tried again
// once a slot may have freed (awaitSlot), up to Attempts, rather than
// excluded, which would leave nothing to try.
func (g *Gateway) onlyChoice(model, key string, tried map[string]bool) bool {
	cd, ok := g.cfg.Directory.(capacityDirectory)
	if !ok || key == "" {
		return false
	}
	listed := false
	for _, r := range cd.Replicas(model) {
		switch {
		case r.Key == key:
			listed = true
		case !tried[r.Key]:
			return false
		}
	}
	return listed
}

// awaitSlot waits, after a replica answered busy, until a slot may have
// freed: a request of this gateway gave one back, or the registry changed
// (the workers' in_flight counts, published on every heartbeat). false:
// ctx ended first.
func (g *Gateway) awaitSlot(ctx context.Context) bool {
	w := g.picker.freed.join()
	defer w.leave()
	var changed <-chan struct{}
	if cd, ok := g.cfg.Directory.(capacityDirectory); ok {
		changed = cd.Changed()
	}
	select {
	case <-w.C:
	case <-changed:
	case <-ctx.Done():
		return false
	}
	return true
}

// ready reports whether some worker can take requests: /readyz. A
// Directory without capacity data is ready when it lists a model.
func (g *Gateway) ready() bool {
	if cd, ok := g.cfg.Directory.(capacityDirectory); ok {
		return cd.Ready()
	}
	return len(g.cfg.Directory.Models()) > 0
}

// signal is a broadcast: wait returns a channel that the next fire closes.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func (s *signal) init() { s.ch = make(chan struct{}) }

func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ch
}

func (s *signal) fire() {
	s.mu.Lock()
	close(s.ch)
	s.ch = make(chan struct{})
	s.mu.Unlock()
}
