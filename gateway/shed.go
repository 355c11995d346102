package gateway

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/teegate/teegate/worker/wire"
)

// Graceful overload (issue 10 item 6). The gateway bounds what it holds in
// flight, per model and in total, and refuses the excess at once with 503
// and Retry-After, before the body is copied or anything is sent on NATS:
// a refusal costs a JSON parse and two atomic counters, so an overloaded
// gateway keeps serving near its peak instead of queueing until every
// request times out. Limits not configured follow the registry: the summed
// max_concurrency of the live workers (those serving the model, for the
// per-model limit) plus the cold-start queue length, which is as many as
// the workers can serve at once and the queue can hold meanwhile.

// shedder counts the requests in flight.
type shedder struct {
	g     *Gateway
	total atomic.Int64
	// perModel holds a counter per known model (route refused the others
	// before they got here, so the map is bounded by the known models).
	perModel sync.Map // model id → *atomic.Int64

	capMu sync.Mutex // serializes recomputing snap
	snap  atomic.Pointer[capacity]
}

// capacity is the registry's capacity as of one directory generation.
type capacity struct {
	at      time.Time
	changed <-chan struct{} // closes when the directory changes after at
	all     int64
	each    map[string]int64
}

func (s *shedder) counter(model string) *atomic.Int64 {
	if v, ok := s.perModel.Load(model); ok {
		return v.(*atomic.Int64)
	}
	v, _ := s.perModel.LoadOrStore(model, &atomic.Int64{})
	return v.(*atomic.Int64)
}

// capacityTTL bounds how stale the registry-derived limits may be: records
// that expire change nothing in the watch.
const capacityTTL = time.Second

// limits returns the limits in force for model (0: unlimited).
func (s *shedder) limits(model string) (total, each int64) {
	cfg := &s.g.cfg
	total, each = int64(cfg.MaxInflight), int64(cfg.MaxInflightPerModel)
	if total > 0 && each > 0 {
		return total, each
	}
	l, ok := cfg.Directory.(workerLister)
	if !ok {
		return total, each // a directory without records: only what is configured
	}
	c := s.capacity(l)
	if total <= 0 {
		total = c.all
	}
	if each <= 0 {
		each = c.each[model] + int64(s.g.queueLength())
	}
	return total, each
}

// capacity returns the registry's capacity, recomputed when the directory
// changed or capacityTTL passed; readers take no lock.
func (s *shedder) capacity(l workerLister) *capacity {
	fresh := func(c *capacity) bool {
		if c == nil || time.Since(c.at) > capacityTTL {
			return false
		}
		select {
		case <-c.changed:
			return false
		default:
			return true
		}
	}
	if c := s.snap.Load(); fresh(c) {
		return c
	}
	s.capMu.Lock()
	defer s.capMu.Unlock()
	if c := s.snap.Load(); fresh(c) {
		return c
	}
	queue := int64(s.g.queueLength())
	c := &capacity{at: time.Now(), all: queue, each: map[string]int64{}}
	if cn, ok := s.g.cfg.Directory.(changeNotifier); ok {
		c.changed = cn.Changed() // before reading: a change meanwhile recomputes
	}
	for _, rec := range l.Workers() {
		n := int64(max(rec.MaxConcurrency, 0))
		c.all += n
		for _, m := range rec.Models {
			c.each[m.ID] += n
		}
	}
	s.snap.Store(c)
	return c
}

// acquire counts one request for model in flight, or refuses it (503,
// Retry-After) when a limit is reached; release undoes it, once.
func (s *shedder) acquire(model string) (release func(), e *APIError) {
	total, each := s.limits(model)
	n := s.counter(model)
	if t := s.total.Add(1); total > 0 && t > total {
		s.total.Add(-1)
		return nil, errOverloaded()
	}
	if m := n.Add(1); each > 0 && m > each {
		n.Add(-1)
		s.total.Add(-1)
		return nil, errOverloaded()
	}
	var once atomic.Bool
	return func() {
		if once.CompareAndSwap(false, true) {
			n.Add(-1)
			s.total.Add(-1)
		}
	}, nil
}

// full reports whether the total limit is reached (a cheap check made
// before the body is parsed).
func (s *shedder) full() bool {
	total, _ := s.limits("")
	return total > 0 && s.total.Load() >= total
}

func errOverloaded() *APIError {
	return &APIError{Status: 503, Type: "server_error", Code: "overloaded",
		Message: "The gateway is at capacity. Please retry after the time in the Retry-After header.", RetryAfter: 1}
}

// queueLength is the cold-start queue length the limits allow for.
func (g *Gateway) queueLength() int {
	if p := g.cfg.Pending; p != nil {
		return p.cfg.QueueLength
	}
	return wire.DefaultQueueLength
}

// free releases the request's in-flight slot (once; nil-safe).
func (r *inflight) free() {
	if r.release != nil {
		r.release()
	}
}

// freeUnlessRelayed frees the slot when the handler returns, unless a
// stream relay took the request over.
func (r *inflight) freeUnlessRelayed() {
	if !r.relayed {
		r.free()
	}
}
