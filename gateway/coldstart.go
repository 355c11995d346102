package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/teegate/teegate/worker/wire"
)

// The cold-start queue (issue 10 item 3). A request for a model the
// gateway knows but that no ready worker can take now waits here instead of
// failing: its body stays in this process's memory, a ticket naming it
// (never its content) goes to the JetStream work-queue stream
// wire.PendingStream, whose per-model durable consumer counts the waiting
// requests for an autoscaler (deploy/keda). As soon as the registry shows a
// worker that can take it (the directory's change signal, or a request
// of this gateway giving its slot back), the request is dispatched and its ticket deleted. The
// stream bounds the queue: a full queue refuses the ticket, and the request
// is answered 503 with Retry-After at once; a request that waited the
// cold-start timeout is answered the same way.

// PendingConfig configures a Pending queue.
type PendingConfig struct {
	// JS opens the ticket stream and the models bucket. Required.
	JS jetstream.JetStream
	// QueueLength is how many requests may wait per model, fleet-wide
	// (default wire.DefaultQueueLength).
	QueueLength int
	// Timeout is how long a request waits for a worker (default
	// wire.DefaultColdStartTimeout).
	Timeout time.Duration
	// ModelMemory is how long a model no live worker serves stays known
	// (default wire.DefaultModelMemory), in the wire.ModelsBucket bucket.
	ModelMemory time.Duration
	// Models are declared: known with zero workers (--model NAME).
	Models []string
	// Gateway names this gateway in its tickets (default: random).
	Gateway string
	Logger  *slog.Logger
}

// Pending is the cold-start queue of one gateway (see the package notes
// above); nil disables it: a known model without a ready worker is then
// answered 503 at once.
type Pending struct {
	cfg      PendingConfig
	js       jetstream.JetStream
	stream   jetstream.StreamConfig
	log      *slog.Logger
	declared map[string]bool

	memory     jetstream.KeyValue
	memWatch   *kvWatch
	memMu      sync.RWMutex
	remembered map[string]memoryEntry // model id → when a worker last served it, per the bucket
	written    sync.Map               // model id → time.Time this gateway last wrote it
	servedBy   map[string][]string    // model id → ids of the workers serving it, as the watch last saw (watch goroutine only)

	consumers sync.Map // model id → struct{}: its durable consumer exists
	waitMu    sync.Mutex
	waiting   map[string]*atomic.Int64 // model id → requests waiting here

	watchOnce sync.Once
	stop      context.CancelFunc
	done      chan struct{}
}

type memoryEntry struct {
	info wire.ModelInfo
	at   time.Time
}

// OpenPending creates (or updates) the ticket stream, the durable consumers
// of the declared models and the models bucket, and loads the bucket.
func OpenPending(ctx context.Context, cfg PendingConfig) (*Pending, error) {
	if cfg.JS == nil {
		return nil, errors.New("cold-start queue: JS is required")
	}
	if cfg.QueueLength < 0 || cfg.Timeout < 0 || cfg.ModelMemory < 0 {
		return nil, errors.New("cold-start queue: queue length, timeout and model memory must be >= 0")
	}
	if cfg.QueueLength == 0 {
		cfg.QueueLength = wire.DefaultQueueLength
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = wire.DefaultColdStartTimeout
	}
	if cfg.ModelMemory == 0 {
		cfg.ModelMemory = wire.DefaultModelMemory
	}
	if cfg.Gateway == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		cfg.Gateway = "gw-" + hex.EncodeToString(b[:])
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Pending{cfg: cfg, js: cfg.JS, stream: wire.PendingConfig(cfg.QueueLength, cfg.Timeout), log: cfg.Logger,
		declared: map[string]bool{}, remembered: map[string]memoryEntry{}, waiting: map[string]*atomic.Int64{}}
	if err := p.ensureStream(ctx); err != nil {
		return nil, err
	}
	for _, m := range cfg.Models {
		p.declared[m] = true
		if err := p.ensureConsumer(ctx, m); err != nil {
			return nil, err
		}
	}
	kv, err := wire.EnsureBucket(ctx, cfg.JS, wire.ModelsConfig(cfg.ModelMemory))
	if err != nil {
		return nil, fmt.Errorf("opening the models bucket: %w", err)
	}
	p.memory = kv
	if p.memWatch, err = watchBucket(ctx, kv, "models bucket", p.applyMemory); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Pending) ensureStream(ctx context.Context) error {
	// A stream that has this configuration already is not updated (see
	// ensureConsumer: an update recounts the consumers' num_pending).
	if st, err := p.js.Stream(ctx, wire.PendingStream); err == nil {
		c, w := st.CachedInfo().Config, p.stream
		if c.MaxMsgsPerSubject == w.MaxMsgsPerSubject && c.MaxAge == w.MaxAge && c.MaxMsgs == w.MaxMsgs &&
			c.MaxBytes == w.MaxBytes && c.MaxMsgSize == w.MaxMsgSize && c.Discard == w.Discard &&
			c.DiscardNewPerSubject == w.DiscardNewPerSubject && c.Retention == w.Retention {
			return nil
		}
	}
	if _, err := p.js.CreateOrUpdateStream(ctx, p.stream); err != nil {
		return fmt.Errorf("opening the cold-start queue %s: %w", wire.PendingStream, err)
	}
	return nil
}

// ensureConsumer creates model's durable consumer once per process (the
// scale signal); it is idempotent on the server.
func (p *Pending) ensureConsumer(ctx context.Context, model string) error {
	if _, ok := p.consumers.Load(model); ok {
		return nil
	}
	// An existing consumer is left as it is: updating one recounts its
	// num_pending, and a recount racing a ticket's publish can lose that
	// ticket from the count for good (seen with nats-server 2.15), which
	// would hide a waiting request from the autoscaler.
	_, err := p.js.Consumer(ctx, wire.PendingStream, wire.PendingConsumer(model))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		_, err = p.js.CreateConsumer(ctx, wire.PendingStream, wire.PendingConsumerConfig(model))
		if errors.Is(err, jetstream.ErrConsumerExists) {
			err = nil // another gateway made it meanwhile
		}
	}
	if err != nil {
		return fmt.Errorf("opening the cold-start consumer of a model: %w", err)
	}
	p.consumers.Store(model, struct{}{})
	return nil
}

func (p *Pending) applyMemory(e jetstream.KeyValueEntry) {
	p.memMu.Lock()
	defer p.memMu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		// The key is the model's encoding, not its id: find the entry.
		for id := range p.remembered {
			if wire.ModelKey(id) == e.Key() {
				delete(p.remembered, id)
			}
		}
		return
	}
	var info wire.ModelInfo
	if json.Unmarshal(e.Value(), &info) != nil || info.ID == "" || wire.ModelKey(info.ID) != e.Key() {
		return
	}
	p.remembered[info.ID] = memoryEntry{info: info, at: e.Created()}
}

// Known reports whether model is declared or was served within the model
// memory; info is what the memory holds of it (zero for a declared model
// never served).
func (p *Pending) Known(model string) (wire.ModelInfo, bool) {
	if p == nil {
		return wire.ModelInfo{}, false
	}
	p.memMu.RLock()
	e, ok := p.remembered[model]
	p.memMu.RUnlock()
	if ok && time.Since(e.at) <= p.cfg.ModelMemory {
		return e.info, true
	}
	if p.declared[model] {
		return wire.ModelInfo{ID: model, OwnedBy: "teegate"}, true
	}
	return wire.ModelInfo{}, false
}

// KnownModels lists the models known with no live worker needed, sorted.
func (p *Pending) KnownModels() []wire.ModelInfo {
	if p == nil {
		return nil
	}
	byID := map[string]wire.ModelInfo{}
	for m := range p.declared {
		byID[m] = wire.ModelInfo{ID: m, OwnedBy: "teegate"}
	}
	p.memMu.RLock()
	for id, e := range p.remembered {
		if time.Since(e.at) <= p.cfg.ModelMemory {
			byID[id] = e.info
		}
	}
	p.memMu.RUnlock()
	out := make([]wire.ModelInfo, 0, len(byID))
	for _, m := range byID {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// remember writes the models live workers serve to the models bucket, each
// at most once per refresh interval (a twentieth of the model memory, at
// least a minute), so the bucket's TTL runs from the last time a worker
// served the model. A model that a worker still alive stopped offering
// (its engine dropped it) is forgotten at once: the memory is for workers
// that left, not for models that are gone.
func (p *Pending) remember(ctx context.Context, dir Directory) {
	models := dir.Models()
	refresh := max(p.cfg.ModelMemory/20, time.Minute)
	now := time.Now()
	for _, m := range models {
		if v, ok := p.written.Load(m.ID); ok && now.Sub(v.(time.Time)) < refresh {
			continue
		}
		raw, err := json.Marshal(m)
		if err != nil || len(raw) > wire.ModelsMaxValue {
			continue
		}
		if _, err := p.memory.Put(ctx, wire.ModelKey(m.ID), raw); err != nil {
			p.log.Warn("remembering a served model failed", "err", err)
			continue
		}
		p.written.Store(m.ID, now)
	}
	l, ok := dir.(workerLister)
	if !ok {
		return
	}
	live := map[string]bool{}
	servedBy := map[string][]string{}
	for _, rec := range l.Workers() {
		// By worker id: a worker that re-attests (a new key epoch, when
		// its models change) keeps its id under a new registry key.
		live[rec.ID] = true
		for _, m := range rec.Models {
			servedBy[m.ID] = append(servedBy[m.ID], rec.ID)
		}
	}
	for m, keys := range p.servedBy {
		if _, still := servedBy[m]; still {
			continue
		}
		for _, k := range keys {
			if live[k] {
				p.forget(ctx, m)
				break
			}
		}
	}
	p.servedBy = servedBy
}

// forget removes model from the memory.
func (p *Pending) forget(ctx context.Context, model string) {
	p.written.Delete(model)
	if err := p.memory.Delete(ctx, wire.ModelKey(model)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		p.log.Warn("forgetting a dropped model failed", "err", err)
		return
	}
	p.memMu.Lock()
	delete(p.remembered, model)
	p.memMu.Unlock()
}

// watch remembers the directory's models whenever it changes, until Close.
func (p *Pending) watch(dir Directory) {
	p.watchOnce.Do(func() { p.startWatch(dir) })
}

func (p *Pending) startWatch(dir Directory) {
	ctx, cancel := context.WithCancel(context.Background())
	p.stop, p.done = cancel, make(chan struct{})
	go func() {
		defer close(p.done)
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			var ch <-chan struct{}
			if cn, ok := dir.(changeNotifier); ok {
				ch = cn.Changed()
			}
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
			p.remember(rctx, dir)
			rcancel()
			select {
			case <-ctx.Done():
				return
			case <-ch:
			case <-t.C:
			}
		}
	}()
}

// Close stops the watches.
func (p *Pending) Close() {
	if p == nil {
		return
	}
	if p.stop != nil {
		p.stop()
		<-p.done
	}
	p.memWatch.close()
}

// counter returns model's count of requests waiting here.
func (p *Pending) counter(model string) *atomic.Int64 {
	p.waitMu.Lock()
	defer p.waitMu.Unlock()
	n := p.waiting[model]
	if n == nil {
		n = &atomic.Int64{}
		p.waiting[model] = n
	}
	return n
}

// Waiting returns the requests waiting in this gateway per model (the
// teegate_pending_requests gauge).
func (p *Pending) Waiting() map[string]int64 {
	out := map[string]int64{}
	if p == nil {
		return out
	}
	p.waitMu.Lock()
	defer p.waitMu.Unlock()
	for m, n := range p.waiting {
		out[m] = n.Load()
	}
	return out
}

// Queued returns the tickets in the stream for each of models,
// fleet-wide (every gateway's waiting requests).
func (p *Pending) Queued(ctx context.Context, models []string) (map[string]uint64, error) {
	st, err := p.js.Stream(ctx, wire.PendingStream)
	if err != nil {
		return nil, fmt.Errorf("reading the cold-start queue: %w", err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(wire.PendingWildcard))
	if err != nil {
		return nil, fmt.Errorf("reading the cold-start queue: %w", err)
	}
	out := make(map[string]uint64, len(models))
	for _, m := range models {
		out[m] = info.State.Subjects[wire.PendingSubject(m)]
	}
	return out, nil
}

// jsStoreFailed is the JetStream error a publish gets when the stream
// refuses to store it: with discard-new, a full subject or stream (nats-server
// JSStreamStoreFailedF, "maximum messages per subject exceeded").
const jsStoreFailed jetstream.ErrorCode = 10077

// fullGrace is how long a request for a model whose workers are all busy
// waits for a slot before it takes a ticket.
const fullGrace = time.Second

// pollInterval is how often a waiting request looks at the directory
// without being told of a change (a record that expired changes nothing
// in the watch).
const pollInterval = 250 * time.Millisecond

// errQueueFull: the model's queue holds its length of waiting requests.
func errQueueFull() *APIError {
	return &APIError{Status: 503, Type: "server_error", Code: "queue_full",
		Message: "No worker is ready for this model and its queue of waiting requests is full. Please retry.", RetryAfter: 2}
}

// errColdStart: no worker became ready within the cold-start timeout.
func errColdStart(retryAfter int) *APIError {
	return &APIError{Status: 503, Type: "server_error", Code: "cold_start_timeout",
		Message: "No worker became ready for this model in time. Please retry.", RetryAfter: retryAfter}
}

// wait holds a request for model until ready reports a worker that can
// take it (nil), or gives up: queue full, or the cold-start timeout (or
// the request's deadline) passed (a 503 with Retry-After). served reports
// whether some worker serves model at all (busy or not). wakeups returns
// a channel that closes when the registry changes (nil: never) and a place
// among the requests waiting for a slot of this gateway (slotq.go), to
// leave when the request stops waiting.
func (p *Pending) wait(model, reqID string, deadline time.Time, ready, served func() bool, wakeups func() (<-chan struct{}, *slotWaiter)) *APIError {
	n := p.counter(model)
	if n.Add(1) > int64(p.cfg.QueueLength) {
		n.Add(-1)
		return errQueueFull()
	}
	defer n.Add(-1)
	giveUp := time.Now().Add(p.cfg.Timeout)
	if deadline.Before(giveUp) {
		giveUp = deadline
	}
	ctx, cancel := context.WithDeadline(context.Background(), giveUp)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	// Workers that serve the model but are all busy usually free a slot
	// soon: the request first waits for one without a ticket, so a burst
	// costs no JetStream round trips; a ticket (the scale signal) follows
	// if none frees within fullGrace.
	if served != nil && served() {
		grace := time.NewTimer(min(fullGrace, time.Until(giveUp)))
		defer grace.Stop()
	local:
		for {
			a, w := wakeups()
			if ready() {
				w.leave()
				return nil
			}
			select {
			case <-a:
			case <-w.C:
			case <-tick.C:
			case <-grace.C:
				w.leave()
				break local
			}
			w.leave()
		}
	}
	seq, e := p.enqueue(ctx, model, reqID, giveUp)
	if e != nil {
		return e
	}
	defer p.dequeue(seq)
	for {
		// Subscribe to the wake-ups before looking, so none is missed.
		a, w := wakeups()
		if ready() {
			w.leave()
			return nil
		}
		select {
		case <-a:
		case <-w.C:
		case <-tick.C:
		case <-ctx.Done():
			w.leave()
			if ready() {
				return nil
			}
			return errColdStart(max(1, int(p.cfg.Timeout/time.Second)/4))
		}
		w.leave()
	}
}

// enqueue publishes the request's ticket and returns its sequence.
func (p *Pending) enqueue(ctx context.Context, model, reqID string, giveUp time.Time) (uint64, *APIError) {
	raw, err := wire.Ticket{RequestID: reqID, Model: model, Gateway: p.cfg.Gateway, Deadline: giveUp.UnixMilli()}.Encode()
	if err != nil {
		p.log.Error("encoding a cold-start ticket failed", "request_id", reqID, "err", err)
		return 0, errNoCapacity()
	}
	if err := p.ensureConsumer(ctx, model); err != nil {
		// The request may still wait; only the scale signal is missing.
		p.log.Warn("no scale signal for a model", "err", err)
	}
	for attempt := 0; ; attempt++ {
		ack, err := p.js.Publish(ctx, wire.PendingSubject(model), raw)
		if err == nil {
			return ack.Sequence, nil
		}
		var apiErr *jetstream.APIError
		switch {
		case errors.As(err, &apiErr) && apiErr.ErrorCode == jsStoreFailed:
			// Discard-new per subject: the model's queue is full, fleet-wide.
			return 0, errQueueFull()
		case (errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, jetstream.ErrStreamNotFound)) && attempt == 0:
			// The stream is gone (someone deleted it, or a server without
			// storage restarted): create it again, once.
			if err := p.ensureStream(ctx); err == nil {
				p.consumers.Delete(model)
				_ = p.ensureConsumer(ctx, model)
				continue
			}
		}
		p.log.Warn("queueing a cold-start ticket failed", "request_id", reqID, "err", err)
		return 0, errNoCapacity()
	}
}

// dequeue deletes a ticket in the background: the request it stood for
// was dispatched or given up, and must not wait on the round trip.
func (p *Pending) dequeue(seq uint64) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := p.js.Stream(ctx, wire.PendingStream)
		if err == nil {
			err = st.DeleteMsg(ctx, seq)
		}
		if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			// It expires with the stream's MaxAge anyway.
			p.log.Warn("deleting a cold-start ticket failed", "err", err)
		}
	}()
}

// changeNotifier is a Directory that says when it changed (KVDirectory).
type changeNotifier interface {
	Changed() <-chan struct{}
}

// hasRoom reports whether a request for model could be dispatched now:
// some live replica serving it is below its concurrency in this gateway's
// count (pick.go); without capacity data, whether a live worker serves it.
func (g *Gateway) hasRoom(model string) bool {
	cd, ok := g.cfg.Directory.(capacityDirectory)
	if !ok {
		_, ok := g.cfg.Directory.Model(model)
		return ok
	}
	for _, r := range cd.Replicas(model) {
		if g.picker.inFlight(r.Key) < r.Record.MaxConcurrency {
			return true
		}
	}
	return false
}

// served reports whether some live worker serves model, busy or not.
func (g *Gateway) served(model string) bool {
	if cd, ok := g.cfg.Directory.(capacityDirectory); ok {
		return len(cd.Replicas(model)) > 0
	}
	_, ok := g.cfg.Directory.Model(model)
	return ok
}

// wakeups returns channels that close when a waiting request should look
// again: the registry changed, or a request of this gateway freed a slot.
func (g *Gateway) wakeups() (changed <-chan struct{}, freed *slotWaiter) {
	freed = g.picker.freed.join()
	if cn, ok := g.cfg.Directory.(changeNotifier); ok {
		changed = cn.Changed()
	}
	return changed, freed
}

// awaitWorker holds a request whose model has no ready worker in the
// cold-start queue until one is ready (nil) or it gives up (503).
func (g *Gateway) awaitWorker(model, reqID string, deadline time.Time) *APIError {
	if g.cfg.Pending == nil {
		return errNoCapacity()
	}
	g.log.Info("request waiting for a worker", "request_id", reqID)
	return g.cfg.Pending.wait(model, reqID, deadline, func() bool { return g.hasRoom(model) }, func() bool { return g.served(model) }, g.wakeups)
}

var pendingDesc = prometheus.NewDesc(MetricPending,
	"Requests waiting in this gateway for a worker (cold-start queue), by model.", []string{"model"}, nil)

// pendingCollector serves MetricPending: one series per model that has had
// a waiting request (known models only: route refused the others).
type pendingCollector struct{ g *Gateway }

func (p pendingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- pendingDesc }

func (p pendingCollector) Collect(ch chan<- prometheus.Metric) {
	for m, n := range p.g.cfg.Pending.Waiting() {
		ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(n), m)
	}
}

// PendingStatus is one model's cold-start queue in GET
// /v1/attestation/workers ("pending"): Waiting here, Queued fleet-wide
// (the tickets in the stream; -1 when the stream could not be read).
type PendingStatus struct {
	Model   string `json:"model"`
	Waiting int64  `json:"waiting"`
	Queued  int64  `json:"queued"`
}

func (g *Gateway) pendingStatuses(ctx context.Context) []PendingStatus {
	p := g.cfg.Pending
	byModel := map[string]*PendingStatus{}
	for _, m := range p.KnownModels() {
		byModel[m.ID] = &PendingStatus{Model: m.ID}
	}
	for _, m := range g.cfg.Directory.Models() {
		byModel[m.ID] = &PendingStatus{Model: m.ID}
	}
	for m, n := range p.Waiting() {
		if byModel[m] == nil {
			byModel[m] = &PendingStatus{Model: m}
		}
		byModel[m].Waiting = n
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ids := make([]string, 0, len(byModel))
	for m := range byModel {
		ids = append(ids, m)
	}
	queued, err := p.Queued(ctx, ids)
	for _, ps := range byModel {
		ps.Queued = int64(queued[ps.Model])
		if err != nil {
			ps.Queued = -1
		}
	}
	out := make([]PendingStatus, 0, len(byModel))
	for _, ps := range byModel {
		out = append(out, *ps)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Model < out[j].Model })
	return out
}
