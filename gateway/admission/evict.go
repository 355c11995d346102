package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/worker/wire"
)

// sysTimeout bounds one system request (LDM, KICK).
const sysTimeout = 2 * time.Second

// onSubmit verifies a bundle, stores it if the policy admits it, judges it
// and replies with the wire.AdmissionStatus it earns. The subject names the
// submitting connection's key (its permissions allow no other), and the
// bundle must bind that key: a connection submits its own evidence, at a
// bounded rate, and its size is checked before any verification work.
func (s *Service) onSubmit(m *nats.Msg) {
	nkey := strings.TrimPrefix(m.Subject, wire.SubmitPrefix+".")
	if len(m.Data) == 0 || len(m.Data) > attest.MaxBundleSize {
		s.reply(m, wire.AdmissionStatus{Error: "a bundle of 1 byte to 1 MiB is expected"})
		return
	}
	if !s.submitLim.allow(nkey) {
		s.reply(m, wire.AdmissionStatus{Error: ErrRateLimited.Error()})
		return
	}
	s.spawn(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st := s.submit(ctx, nkey, m.Data)
		s.reply(m, st)
	})
}

func (s *Service) submit(ctx context.Context, nkey string, raw []byte) wire.AdmissionStatus {
	id := attest.BundleID(raw)
	now := s.cfg.Now()
	start := time.Now()
	v := &verdict{p: proven{evidenceID: id, nkey: nkey}, now: now}
	defer func() { s.metrics.observe(v, start) }()
	vd, err := s.verifier.Bundle(ctx, raw)
	if err != nil {
		v.err = fmt.Errorf("%w: %w", ErrEvidenceRejected, err)
		return wire.AdmissionStatus{EvidenceID: id, Reasons: []string{reason(v.err)}, EvaluatedAt: now.UTC()}
	}
	if nk, err := wire.NKeyOfBundle(vd.Bundle); err != nil || nk != nkey {
		v.err = ErrKeyMismatch
		return wire.AdmissionStatus{EvidenceID: id, Error: ErrKeyMismatch.Error()}
	}
	s.judge(ctx, v, vd)
	if v.admitted() {
		if err := s.store(ctx, id, raw); err != nil {
			s.log.Warn("storing evidence", "evidence", short(id), "err", err)
			return wire.AdmissionStatus{EvidenceID: id, Error: "storing evidence failed"}
		}
	}
	d := s.record(ctx, v)
	return statusOf(d)
}

// onEvidence stores a further bundle for an admitted connection (only
// admitted connections may publish on wire.EvidenceSubject): a fresh-mode
// batch quote, or the bundle of the worker's next key epoch. It is stored
// only when it verifies and the policy admits it now, as a submission is;
// a bundle already stored is not verified or written again.
func (s *Service) onEvidence(m *nats.Msg) {
	nkey := strings.TrimPrefix(m.Subject, wire.EvidencePrefix+".")
	if len(m.Data) == 0 || len(m.Data) > attest.MaxBundleSize {
		s.reply(m, wire.AdmissionStatus{Error: "a bundle of 1 byte to 1 MiB is expected"})
		return
	}
	id := attest.BundleID(m.Data)
	if s.isStored(id) {
		s.reply(m, wire.AdmissionStatus{EvidenceID: id, Allow: true})
		return
	}
	if !s.evidenceLim.allow(nkey) {
		s.reply(m, wire.AdmissionStatus{EvidenceID: id, Error: ErrRateLimited.Error(), RetryAfter: s.evidenceLim.retryAfter()})
		return
	}
	s.spawn(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		now := s.cfg.Now()
		v := &verdict{p: proven{evidenceID: id, nkey: nkey}, now: now}
		vd, err := s.verifier.Bundle(ctx, m.Data)
		if err != nil {
			s.reply(m, wire.AdmissionStatus{EvidenceID: id, Error: reason(fmt.Errorf("%w: %w", ErrEvidenceRejected, err))})
			return
		}
		s.judge(ctx, v, vd)
		if !v.admitted() {
			s.reply(m, wire.AdmissionStatus{EvidenceID: id, Reasons: truncReasons(v.reasons), Error: "the policy does not admit this evidence"})
			return
		}
		if err := s.store(ctx, id, m.Data); err != nil {
			s.log.Warn("storing evidence", "evidence", short(id), "err", err)
			s.reply(m, wire.AdmissionStatus{EvidenceID: id, Error: "storing evidence failed"})
			return
		}
		s.reply(m, wire.AdmissionStatus{EvidenceID: id, Allow: true, EvaluatedAt: now.UTC()})
	})
}

// store writes a verified bundle once: the id is the hash of the bytes, so
// a bundle already there is the same bundle.
func (s *Service) store(ctx context.Context, id string, raw []byte) error {
	if s.isStored(id) {
		return nil
	}
	if _, err := s.evKV.Create(ctx, id, raw); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("storing evidence: %w", err)
	}
	s.mu.Lock()
	if len(s.stored) >= maxStored {
		clear(s.stored)
	}
	s.stored[id] = true
	s.mu.Unlock()
	return nil
}

// maxStored bounds the ids remembered as stored (a cache: forgetting one
// costs one Create that finds the key).
const maxStored = 8192

func (s *Service) isStored(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stored[id]
}

// keyLimiter is a token bucket per key, with a bounded number of keys: a
// flood of fresh keys resets it rather than growing it (each key still pays
// its own connect and key proof).
type keyLimiter struct {
	r     rate.Limit
	burst int
	mu    sync.Mutex
	lims  map[string]*rate.Limiter
}

func newKeyLimiter(r rate.Limit, burst int) *keyLimiter {
	return &keyLimiter{r: r, burst: burst, lims: map[string]*rate.Limiter{}}
}

func (k *keyLimiter) allow(key string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	l := k.lims[key]
	if l == nil {
		if len(k.lims) >= 16384 {
			clear(k.lims)
		}
		l = rate.NewLimiter(k.r, k.burst)
		k.lims[key] = l
	}
	return l.Allow()
}

// retryAfter is the whole seconds, at least one, until a key that has
// spent its burst has a token again.
func (k *keyLimiter) retryAfter() int {
	if k.r <= 0 || math.IsInf(float64(k.r), 1) {
		return 1
	}
	return max(1, int(math.Ceil(1/float64(k.r))))
}

func statusOf(d *Decision) wire.AdmissionStatus {
	return wire.AdmissionStatus{EvidenceID: d.EvidenceID, WorkerID: d.WorkerID, Allow: d.Allow, Reasons: d.Reasons, EvaluatedAt: d.EvaluatedAt, ExpiresAt: d.ExpiresAt}
}

func (s *Service) onStatus(m *nats.Msg) {
	id := string(m.Data)
	if !isEvidenceID(id) {
		s.reply(m, wire.AdmissionStatus{Error: "an evidence id is expected"})
		return
	}
	s.mu.Lock()
	d := s.decisions[id]
	s.mu.Unlock()
	if d == nil {
		// Another replica may have decided a moment ago; the bucket is
		// ahead of this replica's watch.
		d = s.storedDecision(id)
	}
	if d == nil {
		s.reply(m, wire.AdmissionStatus{EvidenceID: id, Error: "no decision recorded for this evidence"})
		return
	}
	s.reply(m, statusOf(d))
}

// storedDecision reads id's decision from the decision bucket (nil when
// there is none).
func (s *Service) storedDecision(id string) *Decision {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	e, err := s.decKV.Get(ctx, id)
	if err != nil {
		return nil
	}
	var d Decision
	if json.Unmarshal(e.Value(), &d) != nil || d.EvidenceID != id {
		return nil
	}
	return &d
}

func (s *Service) reply(m *nats.Msg, st wire.AdmissionStatus) {
	if m.Reply == "" {
		return
	}
	b, _ := json.Marshal(st)
	if err := m.Respond(b); err != nil {
		s.log.Warn("answering admission request", "err", err)
	}
}

// onDisconnect forgets connections the server reports closed.
func (s *Service) onDisconnect(m *nats.Msg) {
	var ev struct {
		Server struct {
			ID string `json:"id"`
		} `json:"server"`
		Client struct {
			ID uint64 `json:"id"`
		} `json:"client"`
	}
	if json.Unmarshal(m.Data, &ev) != nil {
		return
	}
	k := connKey{ev.Server.ID, ev.Client.ID}
	s.mu.Lock()
	if c := s.conns[k]; c != nil {
		c.stopTimers()
		delete(s.conns, k)
	}
	s.mu.Unlock()
}

// notify sends the connection a lame-duck notice: nats.go calls the
// worker's LameDuckModeHandler, on which the worker refreshes its evidence,
// connects anew and drains this connection (requests in flight finish).
func (s *Service) notify(k connKey, why string) {
	if s.cfg.Sys == nil {
		return
	}
	if err := s.sysRequest("LDM", k); err != nil {
		s.log.Info("lame-duck notice not delivered", "server", k.server, "client", k.cid, "why", why, "err", err)
		return
	}
	s.log.Info("worker told to drain", "server", k.server, "client", k.cid, "why", why)
}

func (s *Service) kick(k connKey) {
	if err := s.sysRequest("KICK", k); err != nil {
		// Usually: it drained and left in time.
		s.log.Debug("kick", "server", k.server, "client", k.cid, "err", err)
		return
	}
	s.log.Info("evicted worker kicked after grace", "server", k.server, "client", k.cid)
}

// sysRequest asks server k.server to do verb to connection k.cid and
// checks the server's answer for an error.
func (s *Service) sysRequest(verb string, k connKey) error {
	subj := "$SYS.REQ.SERVER." + k.server + "." + verb
	body := []byte(`{"cid":` + strconv.FormatUint(k.cid, 10) + `}`)
	m, err := s.cfg.Sys.Request(subj, body, sysTimeout)
	if err != nil {
		return fmt.Errorf("requesting %s: %w", verb, err)
	}
	var r struct {
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if json.Unmarshal(m.Data, &r) == nil && r.Error != nil {
		return fmt.Errorf("requesting %s: %s", verb, r.Error.Description)
	}
	return nil
}

// evict starts the eviction of an admitted connection: notice now, kick
// after Grace. Without Sys the connection ends when its JWT expires.
func (s *Service) evictLocked(c *conn, why string) {
	if c.evicting || !c.admitted {
		return
	}
	c.evicting = true
	s.evicted.Add(1)
	if s.cfg.OnEvict != nil {
		s.cfg.OnEvict(c.evidenceID, why)
	}
	// After Stop (a Recheck racing it) no notice goes out and no task may
	// join s.wg, which Stop may already be waiting on.
	if s.cfg.Sys == nil || s.stopped {
		return
	}
	k := c.key
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.notify(k, why)
	}()
	c.timers = append(c.timers, s.after(s.cfg.Grace, func() { s.kick(k) }))
}

// Reload replaces the policy and re-judges every admitted connection;
// those that no longer pass are evicted (see Recheck).
func (s *Service) Reload(ctx context.Context, p Policy) error {
	if p == nil {
		return errors.New("reloading admission policy: nil policy")
	}
	s.pol.Store(&policyBox{p})
	return s.Recheck(ctx)
}

// Recheck re-verifies the evidence of every admitted connection (its age,
// and collateral if the verifier's options fetch it) and re-evaluates the
// policy. Connections whose evidence no longer passes are told to drain
// and kicked after Grace; requests they are serving may finish meanwhile.
// Call it when evidence or collateral is refreshed.
func (s *Service) Recheck(ctx context.Context) error {
	return s.recheck(ctx, time.Time{})
}

// RecheckShared is Recheck for a policy change the whole fleet makes at
// once (since: when it was made). Replicas share the decision bucket: a
// decision another replica stored under the current policy since then is
// taken as it is, and a new one is stored only if no replica stored one
// meanwhile (compare-and-set on the entry), so each evidence is judged
// once for the fleet, however many replicas hold connections presenting
// it.
func (s *Service) RecheckShared(ctx context.Context, since time.Time) error {
	if since.IsZero() {
		since = s.cfg.Now()
	}
	return s.recheck(ctx, since)
}

func (s *Service) recheck(ctx context.Context, since time.Time) error {
	s.mu.Lock()
	ids := map[string]bool{}
	for _, c := range s.conns {
		if c.admitted && !c.evicting {
			ids[c.evidenceID] = true
		}
	}
	s.mu.Unlock()
	var errs []error
	for id := range ids {
		v := s.rejudge(ctx, id, since)
		if ctx.Err() != nil {
			errs = append(errs, fmt.Errorf("rechecking admissions: %w", ctx.Err()))
			break
		}
		if v.admitted() {
			continue
		}
		s.mu.Lock()
		for _, c := range s.conns {
			if c.evidenceID == id {
				s.evictLocked(c, reasonsText(v.reasons))
			}
		}
		s.mu.Unlock()
	}
	return errors.Join(errs...)
}

// rejudge judges evidence id again. With a non-zero since it first looks
// for a decision on it that another replica stored under the current
// policy since then, and stores its own only if none appeared meanwhile.
func (s *Service) rejudge(ctx context.Context, id string, since time.Time) *verdict {
	now := s.cfg.Now()
	v := &verdict{p: proven{evidenceID: id}, now: now}
	var rev uint64
	if !since.IsZero() {
		d, r, ok := s.sharedDecision(ctx, id, since)
		if d != nil {
			return verdictOf(d, now)
		}
		if !ok {
			since = time.Time{} // no compare-and-set possible: store as usual
		}
		rev = r
	}
	vd, err := s.evidence(ctx, id)
	if err != nil {
		v.err, v.reasons = err, []string{reason(err)}
		return v
	}
	s.judge(ctx, v, vd)
	if since.IsZero() {
		s.record(ctx, v)
		return v
	}
	if !s.recordIfUnchanged(ctx, v, rev) {
		// Another replica stored its decision first: the fleet has one.
		if d, _, _ := s.sharedDecision(ctx, id, since); d != nil {
			return verdictOf(d, now)
		}
	}
	return v
}

// sharedDecision returns the stored decision on id if it was made under the
// current policy at or after since, and the entry's revision (0: none)
// for a compare-and-set; ok is false when the bucket could not be read.
func (s *Service) sharedDecision(ctx context.Context, id string, since time.Time) (_ *Decision, rev uint64, ok bool) {
	e, err := s.decKV.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, true
	}
	if err != nil {
		return nil, 0, false
	}
	var d Decision
	if json.Unmarshal(e.Value(), &d) != nil || d.EvidenceID != id {
		return nil, e.Revision(), true
	}
	if pid := policyID(s.policy()); pid != "" && d.Policy == pid && !d.EvaluatedAt.Before(since.Truncate(time.Second)) {
		return &d, e.Revision(), true
	}
	return nil, e.Revision(), true
}

// verdictOf turns a stored decision into the verdict it stands for.
func verdictOf(d *Decision, now time.Time) *verdict {
	v := &verdict{p: proven{evidenceID: d.EvidenceID}, now: now, reasons: d.Reasons, policy: d.Policy, expires: d.ExpiresAt}
	if !d.Allow || !now.Before(d.ExpiresAt) {
		v.err = ErrPolicyDenied
		if len(v.reasons) == 0 {
			v.reasons = []string{"no longer admitted"}
		}
	}
	return v
}

func reasonsText(rs []string) string {
	if len(rs) == 0 {
		return "no longer admitted"
	}
	b, _ := json.Marshal(rs)
	return string(b)
}
