package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"log/slog"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"golang.org/x/time/rate"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/worker/wire"
)

// Bucket and subjects this package owns.
const (
	// DecisionBucket holds the latest Decision per evidence id.
	DecisionBucket = "teegate_admission"
	// CalloutSubject is where nats-server sends authorization requests
	// (nats-server's AuthCalloutSubject).
	CalloutSubject = "$SYS.REQ.USER.AUTH"
	// QueueGroup lets several gateways share the callout: each request is
	// answered once.
	QueueGroup = "teegate-admission"
	// DefaultAccount is the application account workers are placed in
	// (natsembed.DefaultAccount).
	DefaultAccount = "TEEGATE"
)

// Config configures a Service. Conn, Issuer and Policy are required.
type Config struct {
	// Conn is the service's connection: a user of the callout account that
	// bypasses the callout (auth_users), with JetStream access.
	Conn *nats.Conn
	// Sys is an optional system-account connection. With it the service
	// tells workers to drain (a lame-duck notice to the one connection,
	// $SYS.REQ.SERVER.<id>.LDM), kicks those still connected after Grace
	// ($SYS.REQ.SERVER.<id>.KICK), and forgets connections when they close.
	// Without it eviction happens when the connection's JWT expires, which
	// Lease bounds.
	Sys *nats.Conn
	// Issuer is the account key pair whose public key the server's
	// auth_callout names as issuer; it signs responses and user JWTs.
	Issuer nkeys.KeyPair
	// Account is the account admitted workers are placed in. Default
	// DefaultAccount.
	Account string
	// Policy decides admission. Reload replaces it.
	Policy Policy
	// Verify are the bundle verification options (verifiers, simulated
	// gate, clock). Verify.MaxAge is the evidence max age: no admission
	// outlives its evidence.
	Verify attest.VerifyOptions
	// Lease bounds one admission (default 10 min): a connection's JWT
	// expires at min(evidence created + MaxAge, decision + Lease), so a
	// policy change reaches every worker within Lease even without Sys.
	Lease time.Duration
	// MinLease: evidence that would be admitted for less is refused as
	// expiring (default 2 s; JWT expiry has second precision).
	MinLease time.Duration
	// QuarantineLease is how long a quarantined connection lasts before it
	// must reconnect and be judged again (default 1 min).
	QuarantineLease time.Duration
	// Notice is how long before its admission ends a worker is told to
	// refresh (default 30 s). Grace is how long an evicted worker has to
	// drain before it is kicked (default 30 s).
	Notice, Grace time.Duration
	// Concurrency bounds callout requests handled at once (default
	// 4×GOMAXPROCS).
	Concurrency int
	// ReplyMaxMsgs and ReplyExpires bound what an admitted worker may send
	// to the reply subject of one request it received (NATS response
	// permissions): every chunk of a stream is one message, so they must
	// cover the longest stream the gateway lets run, RequestTimeout
	// included (defaults 1,000,000 messages and 11 minutes, above the
	// gateway's 10-minute default deadline).
	ReplyMaxMsgs int
	ReplyExpires time.Duration
	// SubmitRate and SubmitBurst bound evidence submissions per connection
	// key before any verification work (default 1 per second, burst 5);
	// EvidenceRate and EvidenceBurst the further bundles (fresh-mode batch
	// quotes) one admitted key may store (default 50 per second, burst 100).
	SubmitRate    rate.Limit
	SubmitBurst   int
	EvidenceRate  rate.Limit
	EvidenceBurst int
	// Replicas of the decision bucket when this service creates it (0:
	// one; 3 on a three-node cluster).
	Replicas int
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
	// Metrics, when set, receives the decision counters (by result and
	// reason code). Nil: no metrics.
	Metrics prometheus.Registerer
	// OnDecision, when set, hears of every decision with the canonical
	// bundle it judged, and OnEvict of every admitted connection told to
	// drain (the audit log). Both run on the decision path: they must not
	// block for long.
	OnDecision func(d Decision, evidence []byte)
	OnEvict    func(evidenceID, why string)
}

func (c *Config) validate() error {
	if c.Conn == nil || c.Issuer == nil || c.Policy == nil {
		return errors.New("admission config: Conn, Issuer and Policy are required")
	}
	pub, err := c.Issuer.PublicKey()
	if err != nil || !nkeys.IsValidPublicAccountKey(pub) {
		return errors.New("admission config: Issuer must be an account key pair")
	}
	if _, err := c.Issuer.Seed(); err != nil {
		return errors.New("admission config: Issuer must hold its private key")
	}
	if c.Account == "" {
		c.Account = DefaultAccount
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Lease, 10*time.Minute)
	def(&c.MinLease, 2*time.Second)
	def(&c.QuarantineLease, time.Minute)
	def(&c.Notice, 30*time.Second)
	def(&c.Grace, 30*time.Second)
	if c.Concurrency <= 0 {
		c.Concurrency = 4 * runtime.GOMAXPROCS(0)
	}
	if c.ReplyMaxMsgs <= 0 {
		c.ReplyMaxMsgs = 1_000_000
	}
	def(&c.ReplyExpires, 11*time.Minute)
	if c.SubmitRate <= 0 {
		c.SubmitRate = 1
	}
	if c.SubmitBurst <= 0 {
		c.SubmitBurst = 5
	}
	if c.EvidenceRate <= 0 {
		c.EvidenceRate = 50
	}
	if c.EvidenceBurst <= 0 {
		c.EvidenceBurst = 100
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Verify.Now == nil {
		c.Verify.Now = c.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Decision is the latest admission decision on one piece of evidence, as
// stored in DecisionBucket and listed by Decisions.
type Decision struct {
	WorkerID   string `json:"worker_id"`
	EvidenceID string `json:"evidence_id"`
	// NKey is the evidence's signing key as a NATS user nkey: a connection
	// admitted on this evidence owns the inbox space wire.WorkerInboxPrefix(NKey).
	NKey string `json:"nkey,omitempty"`
	// Provider is the provider the evidence names (its worker identity).
	Provider    string         `json:"provider,omitempty"`
	Allow       bool           `json:"allow"`
	Reasons     []string       `json:"reasons,omitempty"`
	Claims      *ClaimsSummary `json:"claims,omitempty"`
	Models      []string       `json:"models,omitempty"`
	Policy      string         `json:"policy,omitempty"`
	EvaluatedAt time.Time      `json:"evaluated_at"`
	// ExpiresAt is when admissions on this evidence end (zero if denied).
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// Connections are the live connections presenting this evidence that
	// this service knows of (not stored in the bucket).
	Connections []Connection `json:"connections,omitempty"`
}

// ClaimsSummary is the part of the claims an operator scans a fleet by.
type ClaimsSummary struct {
	TEE         string    `json:"tee"`
	Simulated   bool      `json:"simulated"`
	Debug       bool      `json:"debug"`
	TCBStatus   string    `json:"tcb_status,omitempty"`
	MRTD        string    `json:"mrtd,omitempty"`
	MREnclave   string    `json:"mrenclave,omitempty"`
	Measurement string    `json:"measurement,omitempty"`
	GPUs        []string  `json:"gpus,omitempty"`
	CreatedAt   time.Time `json:"created_at,omitzero"`
	AgeSeconds  int64     `json:"age_seconds"`
}

// Connection is one worker connection the service authorized.
type Connection struct {
	ServerID string    `json:"server_id"`
	ClientID uint64    `json:"client_id"`
	Admitted bool      `json:"admitted"`
	Evicting bool      `json:"evicting,omitempty"`
	Expires  time.Time `json:"expires"`
}

// Stats counts callout outcomes.
type Stats struct {
	Admitted, Quarantined, Refused, Evicted int64
}

type connKey struct {
	server string
	cid    uint64
}

type conn struct {
	key        connKey
	evidenceID string
	admitted   bool
	evicting   bool
	expires    time.Time
	timers     []*time.Timer
}

// Service is the auth callout that admits workers by their evidence.
type Service struct {
	cfg      Config
	log      *slog.Logger
	verifier *attest.Verifier
	metrics  *metrics
	pol      atomic.Pointer[policyBox]
	sem      chan struct{}
	wg       sync.WaitGroup

	evKV, decKV jetstream.KeyValue
	subs        []*nats.Subscription
	submitLim   *keyLimiter
	evidenceLim *keyLimiter

	mu        sync.Mutex
	stopped   bool
	conns     map[connKey]*conn
	decisions map[string]*Decision
	stored    map[string]bool // evidence ids known to be in the bucket

	stopWatch func()
	watchDone chan struct{}

	admitted, quarantined, refused, evicted atomic.Int64
}

type policyBox struct{ p Policy }

// New validates cfg and returns a Service; Start makes it answer.
func New(cfg Config) (*Service, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Service{
		cfg: cfg, log: cfg.Logger, verifier: attest.NewVerifier(cfg.Verify, 4096),
		sem: make(chan struct{}, cfg.Concurrency), conns: map[connKey]*conn{}, decisions: map[string]*Decision{}, stored: map[string]bool{},
		submitLim: newKeyLimiter(cfg.SubmitRate, cfg.SubmitBurst), evidenceLim: newKeyLimiter(cfg.EvidenceRate, cfg.EvidenceBurst),
	}
	s.pol.Store(&policyBox{cfg.Policy})
	if cfg.Metrics != nil {
		m, err := newMetrics(cfg.Metrics)
		if err != nil {
			return nil, fmt.Errorf("admission config: registering metrics: %w", err)
		}
		s.metrics = m
	}
	return s, nil
}

func (s *Service) policy() Policy { return s.pol.Load().p }

// Start opens the buckets and subscribes to the callout and admission
// subjects. The server admits nobody but static users until it runs.
func (s *Service) Start(ctx context.Context) error {
	js, err := jetstream.New(s.cfg.Conn)
	if err != nil {
		return fmt.Errorf("starting admission: %w", err)
	}
	if s.evKV, err = openEvidence(ctx, js, s.cfg.Replicas); err != nil {
		return fmt.Errorf("starting admission: %w", err)
	}
	dcfg := DecisionConfig()
	dcfg.Replicas = s.cfg.Replicas
	s.decKV, err = wire.EnsureBucket(ctx, js, dcfg)
	if err != nil {
		return fmt.Errorf("starting admission: opening decision bucket: %w", err)
	}
	if err := s.watchDecisions(); err != nil {
		return fmt.Errorf("starting admission: %w", err)
	}
	type sub struct {
		nc   *nats.Conn
		subj string
		h    nats.MsgHandler
	}
	subs := []sub{
		{s.cfg.Conn, CalloutSubject, s.onCallout},
		{s.cfg.Conn, wire.SubmitPrefix + ".*", s.onSubmit},
		{s.cfg.Conn, wire.EvidencePrefix + ".*", s.onEvidence},
		{s.cfg.Conn, wire.StatusSubject, s.onStatus},
	}
	if s.cfg.Sys != nil {
		subs = append(subs, sub{s.cfg.Sys, "$SYS.ACCOUNT." + s.cfg.Account + ".DISCONNECT", s.onDisconnect})
	}
	for _, x := range subs {
		var ns *nats.Subscription
		if x.nc == s.cfg.Sys {
			ns, err = x.nc.Subscribe(x.subj, x.h) // every service must forget its own connections
		} else {
			ns, err = x.nc.QueueSubscribe(x.subj, QueueGroup, x.h)
		}
		if err != nil {
			s.unsubscribe()
			return fmt.Errorf("starting admission: subscribing: %w", err)
		}
		s.subs = append(s.subs, ns)
	}
	for _, nc := range []*nats.Conn{s.cfg.Conn, s.cfg.Sys} {
		if nc == nil {
			continue
		}
		if err := nc.FlushTimeout(5 * time.Second); err != nil {
			s.unsubscribe()
			return fmt.Errorf("starting admission: %w", err)
		}
	}
	return nil
}

// DecisionConfig is the decision bucket's configuration: capped, oldest
// decisions discarded first when full.
func DecisionConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket: DecisionBucket, Description: "teegate admission decisions by evidence id", History: 1,
		TTL: 7 * 24 * time.Hour, MaxBytes: 64 << 20, MaxValueSize: 64 << 10,
	}
}

// openEvidence opens the evidence bucket with its bounds (the admission
// service is its only writer).
func openEvidence(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	cfg := wire.EvidenceConfig()
	cfg.Replicas = replicas
	return wire.EnsureBucket(ctx, js, cfg)
}

func (s *Service) unsubscribe() {
	for _, sub := range s.subs {
		_ = sub.Unsubscribe()
	}
	s.subs = nil
}

// Stop stops answering, waits for requests being handled and cancels the
// notice and kick timers. Admissions already granted run to their expiry.
func (s *Service) Stop() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	for _, c := range s.conns {
		c.stopTimers()
	}
	s.mu.Unlock()
	s.unsubscribe()
	if s.stopWatch != nil {
		s.stopWatch()
		<-s.watchDone
	}
	s.wg.Wait()
}

func (c *conn) stopTimers() {
	for _, t := range c.timers {
		t.Stop()
	}
	c.timers = nil
}

// spawn runs f on its own goroutine, bounded by Concurrency, unless the
// service is stopping.
func (s *Service) spawn(f func()) {
	if !s.enter() {
		return
	}
	s.sem <- struct{}{}
	go func() {
		defer func() { <-s.sem; s.wg.Done() }()
		f()
	}()
}

func (s *Service) onCallout(m *nats.Msg) { s.spawn(func() { s.callout(m) }) }

// calloutBudget bounds the work on one request: nats-server waits its
// auth timeout (2 s by default) and then refuses the connection anyway.
const calloutBudget = 1500 * time.Millisecond

func (s *Service) callout(m *nats.Msg) {
	req, err := jwt.DecodeAuthorizationRequestClaims(string(m.Data))
	if err != nil || req.Issuer != req.Server.ID {
		// Not from a server (the signature is the server's own key): there
		// is nobody to answer.
		s.log.Warn("ignoring malformed authorization request")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), calloutBudget)
	defer cancel()
	now := s.cfg.Now()
	start := time.Now()
	co := req.ConnectOptions
	v := &verdict{now: now}
	p, err := parseCredentials(credentials{EvidenceID: co.Username, NKey: co.Nkey, Sig: co.SignedNonce, Nonce: req.ClientInformation.Nonce})
	if err != nil {
		v.err = err
	} else {
		v = s.decide(ctx, p, now)
	}
	s.metrics.observe(v, start)
	resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	resp.Audience = req.Server.ID
	if refuses(v.err) {
		resp.Error = v.err.Error()
		s.refused.Add(1)
		s.log.Info("worker connection refused", "server", req.Server.ID, "client", req.ClientInformation.ID, "err", v.err)
	} else if resp.Jwt, err = s.userJWT(req.UserNkey, v); err != nil {
		resp.Error = "admission failed"
		s.log.Error("issuing user jwt", "err", err)
	}
	tok, err := resp.Encode(s.cfg.Issuer)
	if err != nil {
		s.log.Error("encoding authorization response", "err", err)
		return
	}
	if err := m.Respond([]byte(tok)); err != nil {
		s.log.Warn("answering authorization request", "err", err)
		return
	}
	if resp.Error != "" {
		return
	}
	if v.admitted() {
		s.admitted.Add(1)
	} else {
		s.quarantined.Add(1)
	}
	s.track(connKey{req.Server.ID, req.ClientInformation.ID}, v)
	// Only verified evidence gets a record: the id is then the hash of
	// what was judged, so nobody can overwrite another's decision by
	// naming its id.
	if v.vd != nil {
		s.record(ctx, v)
	}
	s.log.Info("worker connection authorized", "worker", workerID(v), "evidence", short(v.p.evidenceID),
		"admitted", v.admitted(), "reasons", v.reasons, "expires", v.expires)
}

func workerID(v *verdict) string {
	if v.vd == nil {
		return ""
	}
	return v.vd.Bundle.Worker.ID
}

func short(id string) string {
	if len(id) > 16 {
		return id[:16]
	}
	return id
}

// track remembers an authorized connection and schedules its refresh
// notice.
func (s *Service) track(k connKey, v *verdict) {
	c := &conn{key: k, evidenceID: v.p.evidenceID, admitted: v.admitted(), expires: v.expires}
	if !c.admitted {
		c.expires = v.now.Add(s.cfg.QuarantineLease)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	if old := s.conns[k]; old != nil {
		old.stopTimers()
	}
	s.conns[k] = c
	if c.admitted && s.cfg.Sys != nil {
		at := max(c.expires.Sub(s.cfg.Now())-s.cfg.Notice, 0)
		c.timers = append(c.timers, s.after(at, func() { s.notify(k, "refresh before expiry") }))
	}
	// Without disconnect events a record lives until its JWT expires (the
	// server closes the connection then).
	c.timers = append(c.timers, s.after(c.expires.Sub(s.cfg.Now())+time.Second, func() { s.forget(k, c) }))
}

// after runs f after d unless the service stops first; Stop waits for an
// f that already started.
func (s *Service) after(d time.Duration, f func()) *time.Timer {
	return time.AfterFunc(d, func() {
		if !s.enter() {
			return
		}
		defer s.wg.Done()
		f()
	})
}

// enter counts one more task for Stop to wait on, unless the service is
// stopping; the caller calls s.wg.Done when it returns true.
func (s *Service) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	s.wg.Add(1)
	return true
}

func (s *Service) forget(k connKey, c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur := s.conns[k]; cur == c {
		c.stopTimers()
		delete(s.conns, k)
	}
}

// record stores the decision in memory and in the decision bucket.
func (s *Service) record(ctx context.Context, v *verdict) *Decision {
	d, raw, err := s.remember(v)
	if err == nil {
		_, err = s.decKV.Put(ctx, d.EvidenceID, raw)
	}
	if err != nil {
		s.log.Warn("storing admission decision", "evidence", short(d.EvidenceID), "err", err)
	}
	if s.cfg.OnDecision != nil {
		s.cfg.OnDecision(*d, v.vd.Raw)
	}
	return d
}

// recordIfUnchanged stores the decision only if the bucket entry is still
// at revision rev (0: absent), and reports whether it did.
func (s *Service) recordIfUnchanged(ctx context.Context, v *verdict, rev uint64) bool {
	d, raw, err := s.remember(v)
	if err != nil {
		s.log.Warn("storing admission decision", "evidence", short(d.EvidenceID), "err", err)
		return false
	}
	if rev == 0 {
		_, err = s.decKV.Create(ctx, d.EvidenceID, raw)
	} else {
		_, err = s.decKV.Update(ctx, d.EvidenceID, raw, rev)
	}
	if err == nil && s.cfg.OnDecision != nil {
		s.cfg.OnDecision(*d, v.vd.Raw)
	}
	return err == nil
}

// remember builds v's decision, keeps it in memory and encodes it.
func (s *Service) remember(v *verdict) (*Decision, []byte, error) {
	b := v.vd.Bundle
	nk, _ := wire.NKeyOfBundle(b)
	d := &Decision{
		WorkerID: b.Worker.ID, EvidenceID: v.vd.ID, NKey: nk, Provider: b.Worker.Provider, Allow: v.admitted(), Reasons: truncReasons(v.reasons),
		Claims: summarize(v.vd.Claims), Models: append([]string(nil), b.Worker.Models...), Policy: v.policy,
		EvaluatedAt: v.now.UTC(),
	}
	if d.Allow {
		d.ExpiresAt = v.expires.UTC()
	}
	s.mu.Lock()
	s.decisions[d.EvidenceID] = d
	if len(s.decisions) > maxDecisions {
		s.pruneDecisionsLocked()
	}
	s.mu.Unlock()
	raw, err := json.Marshal(d)
	return d, raw, err
}

// maxDecisions bounds the decisions kept in memory (the bucket keeps more,
// within its own cap).
const maxDecisions = 4096

// truncReasons bounds what one decision keeps of a policy's reasons, so a
// decision always fits the bucket's value cap.
func truncReasons(rs []string) []string {
	const maxN, maxLen = 16, 512
	if len(rs) > maxN {
		rs = append(rs[:maxN:maxN], fmt.Sprintf("… and %d more", len(rs)-maxN))
	}
	out := make([]string, len(rs))
	for i, r := range rs {
		if len(r) > maxLen {
			r = strings.ToValidUTF8(r[:maxLen], "") + "…"
		}
		out[i] = r
	}
	return out
}

// watchDecisions keeps s.decisions in step with the decision bucket, so
// that every replica lists and routes by every replica's decisions.
func (s *Service) watchDecisions() error {
	ctx, cancel := context.WithCancel(context.Background())
	w, err := s.decKV.WatchAll(ctx)
	if err != nil {
		cancel()
		return fmt.Errorf("watching decisions: %w", err)
	}
	s.stopWatch, s.watchDone = cancel, make(chan struct{})
	go func() {
		defer close(s.watchDone)
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil {
					s.learn(e)
				}
			}
		}
	}()
	return nil
}

// learn applies one decision bucket entry: a newer decision replaces the
// one held, a deleted one is forgotten.
func (s *Service) learn(e jetstream.KeyValueEntry) {
	id := e.Key()
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(s.decisions, id)
		return
	}
	var d Decision
	if !isEvidenceID(id) || json.Unmarshal(e.Value(), &d) != nil || d.EvidenceID != id {
		return
	}
	d.Connections = nil
	if old := s.decisions[id]; old != nil && old.EvaluatedAt.After(d.EvaluatedAt) {
		return
	}
	s.decisions[id] = &d
	if len(s.decisions) > maxDecisions {
		s.pruneDecisionsLocked()
	}
}

// pruneDecisionsLocked drops the oldest half of the in-memory decisions
// (the bucket keeps them for its TTL).
func (s *Service) pruneDecisionsLocked() {
	all := make([]*Decision, 0, len(s.decisions))
	for _, d := range s.decisions {
		all = append(all, d)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].EvaluatedAt.Before(all[j].EvaluatedAt) })
	for _, d := range all[:len(all)/2] {
		delete(s.decisions, d.EvidenceID)
	}
}

// Decisions lists the latest decision per evidence id, newest first: those
// this service made and, from the decision bucket, those of every other
// replica (the shared view all replicas route by), with the live
// connections this service knows of.
func (s *Service) Decisions() []Decision {
	s.mu.Lock()
	defer s.mu.Unlock()
	byEv := map[string][]Connection{}
	for _, c := range s.conns {
		byEv[c.evidenceID] = append(byEv[c.evidenceID], Connection{ServerID: c.key.server, ClientID: c.key.cid, Admitted: c.admitted, Evicting: c.evicting, Expires: c.expires.UTC()})
	}
	out := make([]Decision, 0, len(s.decisions))
	for id, d := range s.decisions {
		dc := *d
		dc.Reasons = append([]string(nil), d.Reasons...)
		dc.Models = append([]string(nil), d.Models...)
		dc.Connections = byEv[id]
		sort.Slice(dc.Connections, func(i, j int) bool { return dc.Connections[i].ClientID < dc.Connections[j].ClientID })
		out = append(out, dc)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].EvaluatedAt.Equal(out[j].EvaluatedAt) {
			return out[i].EvaluatedAt.After(out[j].EvaluatedAt)
		}
		return out[i].EvidenceID < out[j].EvidenceID
	})
	return out
}

// Stats returns the callout counters.
func (s *Service) Stats() Stats {
	return Stats{Admitted: s.admitted.Load(), Quarantined: s.quarantined.Load(), Refused: s.refused.Load(), Evicted: s.evicted.Load()}
}
