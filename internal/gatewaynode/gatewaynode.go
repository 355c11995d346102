package gatewaynode

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/teegate/teegate/attest/verifiers"
	"github.com/teegate/teegate/gateway"
	"github.com/teegate/teegate/gateway/admission"
	"github.com/teegate/teegate/gateway/audit"
	"github.com/teegate/teegate/policies"
	"github.com/teegate/teegate/worker/wire"
)

// ErrConfig wraps every configuration problem.
var ErrConfig = errors.New("invalid gateway node config")

// Config configures a gateway node.
type Config struct {
	// Conn is the service connection: a user of the workers' account that
	// the auth callout lets through (auth_users), with JetStream. Required.
	Conn *nats.Conn
	// Sys is a system-account connection (optional): with it admission
	// tells evicted workers to drain and kicks them after the grace period.
	Sys *nats.Conn
	// Issuer is the account key pair the servers' auth_callout names as
	// issuer; every replica holds the same one. Nil runs no admission
	// service: workers are not judged (a plain nats-server), or another
	// process answers the callout.
	Issuer nkeys.KeyPair
	// Policy is a shipped policy name or a .rego file (watched); default
	// "dev". It becomes the fleet's policy when the node starts.
	Policy      string
	PolicyWatch time.Duration
	// AllowSimulated lets simulated evidence verify (its claims say so);
	// the policy still decides. Development and `make cluster` only.
	AllowSimulated bool
	// PinnedSimulatedRoots (DER) restrict simulated evidence to these
	// roots; empty accepts any simulated root.
	PinnedSimulatedRoots [][]byte
	// Admission tunes the admission service; its connections, issuer,
	// policy and (unless set) verifier options are filled in.
	Admission admission.Config
	// Gateway tunes the HTTP gateway; its connection, stores and
	// admissions are filled in.
	Gateway gateway.Config
	// Listener serves HTTP; when nil, Addr is listened on (default
	// "127.0.0.1:0").
	Listener net.Listener
	Addr     string
	// TLS, when set, makes the gateway serve HTTPS with it.
	TLS *tls.Config
	// Replicas of every bucket and stream this node creates (0 or 1: one;
	// 3 on a three-node cluster).
	Replicas int
	// Audit is the audit stream's retention and replication (Replicas 0:
	// the node's); AuditCheckpointEvery how many records a checkpoint
	// follows at most (0: the audit package's default).
	Audit                audit.StreamConfig
	AuditCheckpointEvery int
	// ColdStart tunes the cold-start queue (its JS, Gateway name and
	// Logger are filled in); NoColdStart runs without one (a request for a
	// model no worker can take is answered 503 at once).
	ColdStart   gateway.PendingConfig
	NoColdStart bool
	// ReceiptTTL is how long receipts are kept (default wire.ReceiptsTTL).
	ReceiptTTL time.Duration
	// AdmissionOnly runs no HTTP gateway: the node is an admission service
	// (`teegate admission`) with the buckets, the fleet policy and the
	// audit records of its decisions. It needs Issuer.
	AdmissionOnly bool
	// Name identifies this replica in logs and in the policy bucket.
	Name   string
	Logger *slog.Logger
}

// Validate checks cfg and applies defaults.
func (c *Config) Validate() error {
	if c.Conn == nil {
		return fmt.Errorf("no NATS connection: %w", ErrConfig)
	}
	if c.AdmissionOnly && c.Issuer == nil {
		return fmt.Errorf("an admission-only node needs the issuer: %w", ErrConfig)
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		return fmt.Errorf("replicas %d (want 0 to 5): %w", c.Replicas, ErrConfig)
	}
	if c.Policy == "" {
		c.Policy = "dev"
	}
	if c.Addr == "" {
		c.Addr = "127.0.0.1:0"
	}
	if c.ReceiptTTL <= 0 {
		c.ReceiptTTL = wire.ReceiptsTTL
	}
	if c.Name == "" {
		c.Name = "teegate-gateway"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Node is a running gateway side.
type Node struct {
	URL       string
	JS        jetstream.JetStream
	Gateway   *gateway.Gateway
	Keys      *gateway.KVKeys
	Dir       *gateway.KVDirectory
	Pending   *gateway.Pending // nil with NoColdStart
	Evidence  jetstream.KeyValue
	Receipts  jetstream.KeyValue
	Admission *admission.Service // nil without Issuer
	Policy    *policies.Holder
	// Limits are the per-key counters shared by the replicas; Audit this
	// replica's audit writer; AuditKey, shared by the replicas through the
	// audit key bucket, signs its checkpoints.
	Limits   *gateway.Limits
	Audit    *audit.Log
	AuditKey ed25519.PrivateKey
	logged   sync.Map // evidence ids whose bundle this writer logged

	cfg      Config
	log      *slog.Logger
	policyKV jetstream.KeyValue
	watcher  *policies.Watcher
	setMu    sync.Mutex
	bg       sync.WaitGroup
	cancel   context.CancelFunc
	serveWG  sync.WaitGroup
	once     sync.Once
	httpOnce sync.Once
}

// Start opens the buckets, starts admission (with an issuer) and the
// gateway, and returns once the gateway answers /healthz.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger}
	bctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	defer func() {
		if err != nil {
			n.Close(context.Background())
		}
	}()
	js, err := jetstream.New(cfg.Conn)
	if err != nil {
		return nil, fmt.Errorf("starting gateway: %w", err)
	}
	n.JS = replicated{js, cfg.Replicas}
	// A cluster that just started elects its JetStream leader first, and
	// a request made meanwhile, or racing another replica's creation of the
	// same stream, may go unanswered: each attempt has its own deadline.
	if err := retry(ctx, n.openStores); err != nil {
		return nil, err
	}
	if n.Keys, err = gateway.OpenKeys(ctx, n.JS); err != nil {
		return nil, err
	}
	if n.Dir, err = gateway.OpenDirectory(ctx, n.JS); err != nil {
		return nil, err
	}
	if !cfg.NoColdStart {
		pc := cfg.ColdStart
		pc.JS = n.JS
		if pc.Gateway == "" {
			pc.Gateway = cfg.Name
		}
		if pc.Logger == nil {
			pc.Logger = n.log.With("component", "coldstart")
		}
		if err := retry(ctx, func(ctx context.Context) (err error) {
			n.Pending, err = gateway.OpenPending(ctx, pc)
			return err
		}); err != nil {
			return nil, err
		}
	}
	ac := cfg.Audit
	if ac.Replicas == 0 {
		ac.Replicas = cfg.Replicas
	}
	// Like the stores above, these make replicated buckets and streams,
	// which a cluster still placing its peers refuses for a moment.
	if err := retry(ctx, func(ctx context.Context) (err error) {
		if n.Limits == nil {
			if n.Limits, err = gateway.OpenLimits(ctx, n.JS, cfg.Replicas, cfg.Gateway.Now); err != nil {
				return err
			}
		}
		if n.AuditKey == nil {
			if n.AuditKey, err = audit.LoadOrCreateKey(ctx, n.JS, ac.Replicas); err != nil {
				return err
			}
		}
		n.Audit, err = audit.Open(ctx, audit.Config{JS: n.JS, Stream: ac, Gateway: cfg.Name, Key: n.AuditKey,
			CheckpointEvery: cfg.AuditCheckpointEvery, Logger: n.log.With("component", "audit")})
		return err
	}); err != nil {
		return nil, err
	}
	if cfg.Issuer != nil {
		if err := n.startAdmission(ctx, bctx); err != nil {
			return nil, err
		}
	}
	if cfg.AdmissionOnly {
		return n, nil
	}
	gcfg := cfg.Gateway
	gcfg.Conn, gcfg.Keys, gcfg.Directory = cfg.Conn, n.Keys, n.Dir
	gcfg.Evidence, gcfg.Receipts = n.Evidence, n.Receipts
	gcfg.Limits, gcfg.Audit = n.Limits, n.Audit
	if gcfg.Pending == nil {
		gcfg.Pending = n.Pending
	}
	if gcfg.AuditState == nil {
		// The chain as the audit stream holds it, checkpoints checked
		// against the fleet's audit key.
		js, pub := n.JS, n.AuditKey.Public().(ed25519.PublicKey)
		gcfg.AuditState = func(ctx context.Context) (any, error) { return audit.ReadState(ctx, js, pub) }
	}
	if n.Admission != nil {
		gcfg.Admission = n.Admission
	}
	if gcfg.Logger == nil {
		gcfg.Logger = n.log.With("component", "gateway")
	}
	if n.Gateway, err = gateway.New(gcfg); err != nil {
		return nil, err
	}
	ln := cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return nil, fmt.Errorf("starting gateway: listening: %w", err)
		}
	}
	n.URL = "http://" + ln.Addr().String()
	if cfg.TLS != nil {
		ln = tls.NewListener(ln, cfg.TLS)
		n.URL = "https://" + ln.Addr().String()
	}
	n.serveWG.Add(1)
	go func() {
		defer n.serveWG.Done()
		if err := n.Gateway.Serve(ln); err != nil {
			n.log.Error("gateway stopped", "err", err)
		}
	}()
	if err := n.waitReady(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

// startAdmission starts the auth callout under the fleet policy, the
// policy bucket's watch and, for a policy file, its watcher.
func (n *Node) startAdmission(ctx, bctx context.Context) error {
	cfg := n.cfg
	pol, err := policies.Resolve(cfg.Policy)
	if err != nil {
		return fmt.Errorf("starting admission: %w", err)
	}
	n.Policy = policies.NewHolder(pol)
	acfg := cfg.Admission
	acfg.Conn, acfg.Sys, acfg.Issuer = cfg.Conn, cfg.Sys, cfg.Issuer
	acfg.Policy = admission.Holder(n.Policy)
	if acfg.ReplyExpires == 0 && cfg.Gateway.RequestTimeout > 0 {
		// A worker may answer a request for as long as the gateway waits.
		acfg.ReplyExpires = cfg.Gateway.RequestTimeout + time.Minute
	}
	if acfg.Replicas == 0 {
		acfg.Replicas = cfg.Replicas
	}
	if acfg.Verify.CPU == nil {
		acfg.Verify = verifiers.Options(verifiers.Config{AllowSimulated: cfg.AllowSimulated,
			PinnedSimulatedRoots: cfg.PinnedSimulatedRoots, MaxAge: acfg.Verify.MaxAge})
	}
	if acfg.Logger == nil {
		acfg.Logger = n.log.With("component", "admission")
	}
	if acfg.OnDecision == nil {
		acfg.OnDecision = n.auditDecision
	}
	if acfg.OnEvict == nil {
		acfg.OnEvict = func(evidenceID, why string) {
			n.Audit.Append(audit.Entry{Kind: audit.KindEviction, EvidenceID: evidenceID, Reasons: []string{why}})
		}
	}
	if n.Admission, err = admission.New(acfg); err != nil {
		return fmt.Errorf("starting admission: %w", err)
	}
	if err := n.Admission.Start(ctx); err != nil {
		n.Admission = nil
		return err
	}
	if n.policyKV, err = n.JS.CreateOrUpdateKeyValue(ctx, policyBucket(cfg.Replicas)); err != nil {
		return fmt.Errorf("opening the policy bucket: %w", err)
	}
	if _, err := n.share(ctx, pol); err != nil {
		return err
	}
	n.log.Info("admission policy", "policy", pol.Name(), "hash", pol.Hash())
	n.bg.Add(1)
	go n.watchPolicy(bctx)
	if policies.IsBuiltin(cfg.Policy) {
		return nil
	}
	n.watcher = &policies.Watcher{Interval: cfg.PolicyWatch}
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		_ = n.watcher.Watch(bctx, cfg.Policy, func(p *policies.Policy, err error) {
			if err != nil {
				n.log.Error("reloading the admission policy failed; keeping the previous one", "err", err)
				return
			}
			rctx, cancel := context.WithTimeout(bctx, time.Minute)
			defer cancel()
			if err := n.SetPolicy(rctx, p); err != nil {
				n.log.Error("re-judging workers after a policy reload", "err", err)
			}
		})
	}()
	return nil
}

// share makes p the fleet's policy in the bucket, unless it holds p
// already, and returns when the fleet adopted it.
func (n *Node) share(ctx context.Context, p *policies.Policy) (time.Time, error) {
	if e, err := n.policyKV.Get(ctx, policyKey); err == nil {
		if cur, sp, err := decodePolicy(e.Value()); err == nil && cur.Hash() == p.Hash() {
			return sp.SetAt, nil
		}
	}
	now := time.Now()
	raw, err := encodePolicy(p, n.cfg.Name, now)
	if err != nil {
		return time.Time{}, err
	}
	if _, err := n.policyKV.Put(ctx, policyKey, raw); err != nil {
		return time.Time{}, fmt.Errorf("storing the fleet policy: %w", err)
	}
	return now, nil
}

// SetPolicy makes p the fleet's admission policy: this replica adopts it
// and re-judges the workers it admitted (those it no longer admits drain
// and are disconnected after the grace period); the others adopt it from
// the policy bucket and re-judge theirs.
func (n *Node) SetPolicy(ctx context.Context, p *policies.Policy) error {
	if p == nil {
		return errors.New("setting admission policy: nil policy")
	}
	if n.Admission == nil {
		return errors.New("setting admission policy: this gateway runs no admission service")
	}
	at, err := n.share(ctx, p)
	if err != nil {
		return err
	}
	return n.apply(ctx, p, at)
}

// apply adopts p here and re-judges this replica's connections; decisions
// another replica stored under p since the fleet adopted it (at) stand.
func (n *Node) apply(ctx context.Context, p *policies.Policy, at time.Time) error {
	n.setMu.Lock()
	defer n.setMu.Unlock()
	prev := n.Policy.Set(p)
	if prev == nil || prev.Hash() != p.Hash() {
		n.log.Info("admission policy changed", "policy", p.Name(), "hash", p.Hash())
	}
	if err := n.Admission.RecheckShared(ctx, at); err != nil {
		return fmt.Errorf("setting admission policy: %w", err)
	}
	return nil
}

// ReloadPolicy reloads the policy (the operator's SIGHUP): a policy file
// is read again, a shipped policy compiled again; the fleet adopts it.
func (n *Node) ReloadPolicy(ctx context.Context) error {
	if n.watcher != nil {
		n.watcher.Reload()
		return nil
	}
	p, err := policies.Resolve(n.cfg.Policy)
	if err != nil {
		return fmt.Errorf("reloading admission policy: %w", err)
	}
	return n.SetPolicy(ctx, p)
}

// AddKey stores an API key and waits until the gateway sees it.
func (n *Node) AddKey(ctx context.Context, secret string, rec gateway.APIKey) error {
	kv, err := gateway.EnsureKeysBucket(ctx, n.JS)
	if err != nil {
		return err
	}
	if err := gateway.AddKey(ctx, kv, secret, rec); err != nil {
		return err
	}
	return n.Keys.WaitFor(ctx, secret)
}

func (n *Node) waitReady(ctx context.Context) error {
	// The probe asks this process's own listener whether it is up; it
	// does not judge the certificate (clients do).
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	return poll(ctx, func() bool {
		resp, err := client.Get(n.URL + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// Shutdown stops serving HTTP; requests in flight finish, bounded by ctx.
// Admission keeps answering until Close (workers may still be leaving).
func (n *Node) Shutdown(ctx context.Context) {
	n.httpOnce.Do(func() {
		if n.Gateway != nil {
			_ = n.Gateway.Shutdown(ctx)
			n.serveWG.Wait()
		}
	})
}

// Close stops the gateway (requests in flight finish, bounded by ctx),
// admission and the watchers. The caller owns the connections.
func (n *Node) Close(ctx context.Context) {
	n.once.Do(func() {
		n.Shutdown(ctx)
		if n.cancel != nil {
			n.cancel()
		}
		n.bg.Wait()
		if n.Admission != nil {
			n.Admission.Stop()
		}
		if n.Audit != nil {
			n.Audit.Close()
		}
		n.Pending.Close()
		if n.Dir != nil {
			n.Dir.Close()
		}
		if n.Keys != nil {
			n.Keys.Close()
		}
	})
}

// auditDecision records an admission decision, with the evidence bundle
// the first time this writer logs it.
func (n *Node) auditDecision(d admission.Decision, evidence []byte) {
	e := audit.Entry{Kind: audit.KindAdmission, Worker: d.WorkerID, Provider: d.Provider, EvidenceID: d.EvidenceID,
		Allow: &d.Allow, Reasons: d.Reasons, Policy: d.Policy, Models: d.Models}
	if d.Claims != nil {
		e.Claims, _ = json.Marshal(d.Claims)
	}
	if _, dup := n.logged.LoadOrStore(d.EvidenceID, true); !dup {
		e.Evidence = evidence
	}
	n.Audit.Append(e)
}

// openStores opens (creating when missing) every bucket and stream the
// gateway side uses.
func (n *Node) openStores(ctx context.Context) error {
	cfg := n.cfg
	var err error
	if n.Evidence, err = wire.EnsureBucket(ctx, n.JS, wire.EvidenceConfig()); err != nil {
		return err
	}
	if _, err := n.JS.CreateOrUpdateKeyValue(ctx, wire.RegistryConfig()); err != nil {
		return fmt.Errorf("opening worker registry: %w", err)
	}
	if n.Receipts, err = gateway.EnsureReceiptsBucket(ctx, n.JS, cfg.ReceiptTTL); err != nil {
		return err
	}
	if _, err := gateway.EnsureKeysBucket(ctx, n.JS); err != nil {
		return err
	}
	if cfg.Issuer != nil {
		// Admission opens these itself, once; made here they are made
		// under the retry a cluster that is still placing its peers needs.
		if _, err := wire.EnsureBucket(ctx, n.JS, admission.DecisionConfig()); err != nil {
			return err
		}
		if _, err := n.JS.CreateOrUpdateKeyValue(ctx, policyBucket(cfg.Replicas)); err != nil {
			return fmt.Errorf("opening the policy bucket: %w", err)
		}
	}
	return nil
}

// poll calls cond until it is true or ctx ends.
func poll(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// retry calls f until it succeeds or ctx ends, returning f's last error;
// each attempt has 5 s (a request sent while the cluster elects its
// JetStream leader gets no answer).
func retry(ctx context.Context, f func(context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := f(actx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}
