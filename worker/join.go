package worker

// Connecting by evidence (DESIGN §4). A worker with a Keeper has no NATS
// credentials of its own: each connection presents the current epoch's
// evidence id as user name and proves it holds that evidence's signing key
// (wire.WorkerConnectOptions). The gateway's admission service answers the
// server's auth callout: evidence it has not seen quarantines the
// connection (it may only submit evidence and ask why), evidence the policy
// admits earns permissions for exactly the models it names.
//
// So a worker joins in two steps: a first connection submits the bundle
// (wire.SubmitSubject), then, if the policy allows it, a second connection
// is judged on the stored evidence and serves. Connection changes are make
// before break: on a new key epoch or a lame-duck notice from the server
// the worker joins anew, starts serving on the new connection, and only
// then retires the old one: it removes its registry record (each serving
// connection keeps one, keyed by the evidence it was admitted on: the only
// key its permissions let it write), stops taking requests, finishes those
// in flight and closes. A worker the policy no longer
// admits withdraws its record, drains, and asks again every RetryInterval.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/wire"
)

// AdmissionState is what a worker knows of its admission.
type AdmissionState struct {
	// Admitted: the worker serves on a connection the server lets it
	// serve on.
	Admitted bool `json:"admitted"`
	// Open: nobody judged it. The worker was given a connection (Conn), or
	// the server answered without an admission service.
	Open bool `json:"open,omitempty"`
	// EvidenceID is the evidence the latest attempt presented.
	EvidenceID string `json:"evidence_id,omitempty"`
	// Reasons are the admission service's, when it refused.
	Reasons   []string  `json:"reasons,omitempty"`
	CheckedAt time.Time `json:"checked_at,omitzero"`
}

// ErrNotAdmitted: the worker has no admitted connection to do this on.
var ErrNotAdmitted = errors.New("worker not admitted")

// ErrEvidenceRateLimited: the admission service refused to store a bundle
// because this worker key sent more than its evidence rate (fresh-mode
// batches beyond it). Errors carrying it are *EvidenceRateError.
var ErrEvidenceRateLimited = errors.New("evidence rate of this worker key exceeded")

// EvidenceRateError says how long to wait before the admission service
// stores this key's evidence again.
type EvidenceRateError struct {
	RetryAfter time.Duration
}

func (e *EvidenceRateError) Error() string {
	return fmt.Sprintf("%v; retry after %s", ErrEvidenceRateLimited, e.RetryAfter)
}

// Unwrap returns ErrEvidenceRateLimited.
func (e *EvidenceRateError) Unwrap() error { return ErrEvidenceRateLimited }

// Admission returns the outcome of the latest admission attempt.
func (w *Worker) Admission() AdmissionState {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.state
	st.Reasons = slices.Clone(st.Reasons)
	return st
}

// EpochRotated tells the worker that its Keeper started a new epoch
// (enclave.KeeperConfig.OnRotate): it publishes the bundle over the
// admitted connection, so receipts that name it can be verified, and joins
// with it. Without the call the worker notices a new epoch at its next
// heartbeat.
func (w *Worker) EpochRotated(e *enclave.Epoch) {
	if p, ok := w.getNotary().(interface {
		PublishEpoch(context.Context, *enclave.Epoch) error
	}); ok && w.pub.hasTarget() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.PublishEpoch(ctx, e); err != nil {
			w.log.Warn("publishing new epoch's evidence failed", "err", err)
		}
	}
	w.nudge()
}

func (w *Worker) nudge() {
	select {
	case w.nudgeCh <- struct{}{}:
	default:
	}
}

// run re-joins when nudged (new epoch, lame-duck notice, refused
// subscription) and, while not admitted, every RetryInterval.
func (w *Worker) run() {
	defer close(w.runDone)
	retry := time.NewTimer(w.cfg.RetryInterval)
	defer retry.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-w.nudgeCh:
		case <-retry.C:
		}
		ctx, cancel := context.WithTimeout(w.ctx, time.Minute)
		if err := w.reconcile(ctx); err != nil && w.ctx.Err() == nil {
			w.log.Warn("joining failed", "err", err)
		}
		cancel()
		retry.Reset(w.cfg.RetryInterval)
	}
}

// reconcile brings the worker's connections in line with its current
// epoch and the server's wishes. It returns an error only when it could
// not ask (a refusal is not an error; see Admission).
func (w *Worker) reconcile(ctx context.Context) error {
	w.connMu.Lock()
	defer w.connMu.Unlock()
	ep := w.cfg.Keeper.Current()
	if ep == nil {
		return enclave.ErrKeeperClosed
	}
	w.mu.Lock()
	cur := w.cur
	w.mu.Unlock()
	flagged := cur != nil && cur.flagged.Load()
	if cur != nil && !flagged && cur.epoch == ep.ID {
		return nil
	}
	sv, st, err := w.join(ctx, ep)
	if err == nil && sv == nil && flagged && cur.epoch == ep.ID {
		// The evidence this connection presents no longer earns admission:
		// it expires, or was judged again. Fresh evidence may.
		var next *enclave.Epoch
		if next, err = w.cfg.Keeper.Rotate(ctx); err == nil {
			sv, st, err = w.join(ctx, next)
		}
	}
	if sv != nil {
		w.switchTo(ctx, sv)
		return nil
	}
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.state = AdmissionState{EvidenceID: st.EvidenceID, Reasons: st.Reasons, CheckedAt: time.Now().UTC()}
	w.mu.Unlock()
	w.log.Warn("worker not admitted", "evidence", short(st.EvidenceID), "reasons", st.Reasons)
	if flagged {
		w.withdraw(cur)
	}
	return nil
}

// join submits ep's evidence over a quarantined connection and, if the
// admission service allows it, opens a connection that is judged on it and
// serves there. sv is nil when the worker was not admitted.
func (w *Worker) join(ctx context.Context, ep *enclave.Epoch) (*serving, wire.AdmissionStatus, error) {
	q, err := w.quarantined(ep)
	if err != nil {
		return nil, wire.AdmissionStatus{}, err
	}
	st, err := submit(ctx, q, ep.Raw)
	if errors.Is(err, nats.ErrNoResponders) {
		// No admission service: this server admits connections by its own
		// configuration, and accepted this one. Serve on it.
		w.mu.Lock()
		w.quar = nil
		w.mu.Unlock()
		q.open = true
		if err := w.serveOn(ctx, q); err != nil {
			q.nc.Close()
			return nil, wire.AdmissionStatus{}, err
		}
		return q, wire.AdmissionStatus{EvidenceID: ep.ID, Allow: true}, nil
	}
	if err != nil {
		return nil, st, err
	}
	if st.Error != "" {
		return nil, st, fmt.Errorf("submitting evidence: the admission service says: %s", st.Error)
	}
	if !st.Allow {
		return nil, st, nil
	}
	w.pub.stored(ep.ID)
	w.mu.Lock()
	models := w.models
	w.mu.Unlock()
	// The connection that submitted may be admitted already: its evidence
	// was stored before it connected (EpochRotated published it).
	if ok, err := admitted(ctx, q.nc, models); err == nil && ok {
		w.mu.Lock()
		w.quar = nil
		w.mu.Unlock()
		if err := w.serveOn(ctx, q); err != nil {
			q.nc.Close()
			return nil, st, err
		}
		return q, st, nil
	}
	sv, err := w.dial(ep)
	if err != nil {
		return nil, st, err
	}
	ok, err := admitted(ctx, sv.nc, models)
	if err == nil && !ok {
		// Judged between the submission and this connection by a policy
		// that changed meanwhile: ask again later.
		sv.nc.Close()
		st.Allow = false
		st.Reasons = append(st.Reasons, "the connection was quarantined although the evidence was admitted")
		return nil, st, nil
	}
	if err == nil {
		err = w.serveOn(ctx, sv)
	}
	if err != nil {
		sv.nc.Close()
		return nil, st, err
	}
	w.mu.Lock()
	q, w.quar = w.quar, nil
	w.mu.Unlock()
	w.closeServing(q)
	return sv, st, nil
}

// quarantined returns a connection presenting ep, reusing the worker's
// quarantined connection when it presents the same evidence.
func (w *Worker) quarantined(ep *enclave.Epoch) (*serving, error) {
	w.mu.Lock()
	q := w.quar
	w.mu.Unlock()
	if q != nil && q.epoch == ep.ID && !q.nc.IsClosed() {
		return q, nil
	}
	next, err := w.dial(ep)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.quar = next
	w.mu.Unlock()
	w.closeServing(q)
	return next, nil
}

// dial opens a connection presenting ep. The server may tell it to go
// (lame-duck notice: a new epoch or policy needs a new connection) or
// refuse its subscriptions (it was reconnected into quarantine): either
// flags it for the admission loop to replace.
func (w *Worker) dial(ep *enclave.Epoch) (*serving, error) {
	opts, err := wire.WorkerConnectOptions(ep.ID, ep.SigningPub(), ep.Sign)
	if err != nil {
		return nil, err
	}
	nk, err := wire.WorkerNKey(ep.SigningPub())
	if err != nil {
		return nil, err
	}
	sv := &serving{own: true, epoch: ep.ID, nkey: nk}
	handlers := []nats.Option{
		nats.MaxReconnects(-1),
		nats.LameDuckModeHandler(func(*nats.Conn) {
			w.log.Info("told to drain this connection", "evidence", short(sv.epoch))
			sv.flagged.Store(true)
			w.nudge()
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) && sv.active.Load() {
				sv.flagged.Store(true)
				w.nudge()
			}
			w.log.Warn("nats error", "err", err)
		}),
	}
	nc, err := w.cfg.Dial(append(opts, handlers...)...)
	if errors.Is(err, nats.ErrNkeysNotSupported) {
		// A server with no authentication at all sends no nonce to sign:
		// it accepts anybody, so there is nothing to prove to it.
		nc, err = w.cfg.Dial(handlers...)
	}
	if err != nil {
		return nil, fmt.Errorf("connecting to nats by evidence: %w", err)
	}
	sv.nc = nc
	return sv, nil
}

// submit sends a bundle of sv's key to the admission service, on the
// subject that names that key.
func submit(ctx context.Context, sv *serving, raw []byte) (wire.AdmissionStatus, error) {
	var st wire.AdmissionStatus
	m, err := sv.nc.RequestWithContext(ctx, wire.SubmitSubject(sv.nkey), raw)
	if err != nil {
		return st, fmt.Errorf("submitting evidence: %w", err)
	}
	if err := json.Unmarshal(m.Data, &st); err != nil {
		return st, fmt.Errorf("decoding admission status: %w", err)
	}
	return st, nil
}

// admitted asks the server which permissions it enforces on nc: the
// connection is admitted when it may subscribe to the worker's models.
// Only the server's word counts here; the admission service's status said
// what the evidence earns, not what this connection got.
func admitted(ctx context.Context, nc *nats.Conn, models []engine.Model) (bool, error) {
	m, err := nc.RequestWithContext(ctx, wire.UserInfoSubject, nil)
	if errors.Is(err, nats.ErrNoResponders) {
		return true, nil // a server without a system account: nothing to ask
	}
	if err != nil {
		return false, fmt.Errorf("asking the server for this connection's permissions: %w", err)
	}
	var r struct {
		Data struct {
			Permissions *struct {
				Subscribe *struct {
					Allow []string `json:"allow"`
					Deny  []string `json:"deny"`
				} `json:"subscribe"`
			} `json:"permissions"`
		} `json:"data"`
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return false, fmt.Errorf("decoding user info: %w", err)
	}
	if r.Error != nil {
		return false, fmt.Errorf("asking the server for this connection's permissions: %s", r.Error.Description)
	}
	p := r.Data.Permissions
	if p == nil || p.Subscribe == nil {
		return true, nil
	}
	if slices.Contains(p.Subscribe.Deny, wire.InferWildcard) {
		return false, nil
	}
	if len(p.Subscribe.Allow) == 0 {
		return true, nil
	}
	for _, mo := range models {
		if !slices.Contains(p.Subscribe.Allow, wire.InferSubject(mo.ID)) {
			return false, nil
		}
	}
	return true, nil
}

// switchTo makes sv the serving connection: its registry record first,
// then the old connection retires in the background.
func (w *Worker) switchTo(ctx context.Context, sv *serving) {
	w.pub.setTarget(sv)
	w.mu.Lock()
	old := w.cur
	w.cur = sv
	w.state = AdmissionState{Admitted: true, Open: sv.open, EvidenceID: sv.epoch, CheckedAt: time.Now().UTC()}
	w.mu.Unlock()
	if w.getNotary() == nil {
		// The first admitted connection: the epoch's bundle is stored
		// already (submitted), so the notary publishes nothing now.
		n, err := NewKeeperNotary(ctx, w.cfg.Keeper, w.pub)
		if err != nil {
			w.log.Error("starting the notary failed; responses carry no receipts", "err", err)
		} else {
			w.notary.Store(&notaryBox{n})
		}
	}
	if err := w.publishRecord(ctx); err != nil {
		w.log.Warn("publishing registry record failed", "err", err)
	}
	w.log.Info("serving on an admitted connection", "evidence", short(sv.epoch))
	if old != nil {
		w.retire(old)
	}
}

// withdraw stops serving on sv with no connection to replace it: the
// record goes first, so the gateway stops routing here, then sv drains.
func (w *Worker) withdraw(sv *serving) {
	w.mu.Lock()
	if w.cur == sv {
		w.cur = nil
	}
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(w.ctx, 5*time.Second)
	defer cancel()
	if err := sv.kv.Delete(ctx, w.recordKey(sv)); err != nil {
		w.log.Warn("removing registry record failed", "err", err)
	}
	w.retire(sv)
}

// retire stops taking requests on sv, lets those in flight finish on it,
// and closes it. Its registry record (keyed by its evidence) goes first;
// the current connection keeps its own.
func (w *Worker) retire(sv *serving) {
	w.retiring.Add(1)
	go func() {
		defer w.retiring.Done()
		// A connection replaced by one on the same evidence (it was
		// flagged, say after a reconnect to another node) shares its
		// record key with the current one: that record stays.
		w.mu.Lock()
		shared := w.cur != nil && w.cur != sv && w.recordKey(w.cur) == w.recordKey(sv)
		w.mu.Unlock()
		if sv.kv != nil && sv.epoch != "" && !shared {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := sv.kv.Delete(ctx, w.recordKey(sv)); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
				w.log.Debug("removing the retired connection's record", "err", err)
			}
			cancel()
		}
		if sv.svc != nil {
			if err := sv.svc.Stop(); err != nil {
				w.log.Warn("stopping the retired connection's service", "err", err)
			}
		}
		sv.inflight.Wait()
		// Requests in flight may have published fresh evidence through it.
		w.pub.clearTarget(sv)
		w.closeServing(sv)
		w.log.Info("retired a connection", "evidence", short(sv.epoch))
	}()
}

func short(id string) string {
	if len(id) > 16 {
		return id[:16]
	}
	return id
}

// evidencePublisher is where KeeperNotary stores bundles: the admission
// service, asked over whichever connection serves now (connections come
// and go with epochs while the notary stays). Only the admission service
// writes the evidence bucket; on a bus without one the worker writes it.
type evidencePublisher struct {
	mu     sync.Mutex
	target *serving
	known  map[string]bool
}

func (p *evidencePublisher) setTarget(sv *serving) {
	p.mu.Lock()
	p.target = sv
	p.mu.Unlock()
}

// clearTarget forgets sv if it is still the target.
func (p *evidencePublisher) clearTarget(sv *serving) {
	p.mu.Lock()
	if p.target == sv {
		p.target = nil
	}
	p.mu.Unlock()
}

func (p *evidencePublisher) hasTarget() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.target != nil
}

// stored notes a bundle the admission service stored.
func (p *evidencePublisher) stored(id string) {
	p.mu.Lock()
	if len(p.known) > 1024 {
		clear(p.known)
	}
	p.known[id] = true
	p.mu.Unlock()
}

// Put has the admission service store a bundle, over the serving
// connection.
func (p *evidencePublisher) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	p.mu.Lock()
	sv, known := p.target, p.known[key]
	p.mu.Unlock()
	if known {
		return 0, nil
	}
	if sv == nil {
		return 0, fmt.Errorf("publishing evidence: %w", ErrNotAdmitted)
	}
	if sv.ev != nil {
		return sv.ev.Put(ctx, key, value)
	}
	m, err := sv.nc.RequestWithContext(ctx, wire.EvidenceSubject(sv.nkey), value)
	if err != nil {
		return 0, fmt.Errorf("publishing evidence: %w", err)
	}
	var st wire.AdmissionStatus
	if err := json.Unmarshal(m.Data, &st); err != nil {
		return 0, fmt.Errorf("publishing evidence: decoding the admission service's answer: %w", err)
	}
	if st.Error != "" && st.RetryAfter > 0 {
		return 0, fmt.Errorf("publishing evidence: %w", &EvidenceRateError{RetryAfter: time.Duration(min(st.RetryAfter, 3600)) * time.Second})
	}
	if st.Error != "" {
		return 0, fmt.Errorf("publishing evidence: the admission service says: %s", st.Error)
	}
	p.stored(key)
	return 0, nil
}
