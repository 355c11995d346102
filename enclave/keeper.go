package enclave

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/teegate/teegate/attest"
)

// Keeper defaults.
const (
	DefaultEpoch = time.Hour
	DefaultGrace = 5 * time.Minute
)

// ErrKeeperClosed: the Keeper was closed.
var ErrKeeperClosed = errors.New("keeper closed")

// KeeperConfig configures a Keeper.
type KeeperConfig struct {
	// Attester produces the evidence. Required.
	Attester Attester
	// Identity names the worker in every bundle. ID is required.
	Identity attest.WorkerIdentity
	// Epoch is how long a key epoch lasts before Run rotates it.
	Epoch time.Duration
	// Grace is how long a rotated-out epoch still signs and resolves by id,
	// so requests in flight at rotation finish on the keys they started on.
	Grace time.Duration
	// Batch configures fresh-mode batching per epoch.
	Batch BatchConfig
	// OnRotate, if set, is called with each new epoch (the first included),
	// for example to publish its bundle. It runs on the rotating goroutine.
	OnRotate func(*Epoch)
	// OnError, if set, receives rotation failures in Run (the current epoch
	// stays in service and Run retries).
	OnError func(error)
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Validate checks the config and fills defaults.
func (c *KeeperConfig) Validate() error {
	if c.Attester == nil {
		return errors.New("keeper config: no attester")
	}
	if c.Identity.ID == "" {
		return errors.New("keeper config: no worker id")
	}
	if c.Epoch < 0 || c.Grace < 0 {
		return errors.New("keeper config: negative duration")
	}
	if c.Epoch == 0 {
		c.Epoch = DefaultEpoch
	}
	if c.Grace == 0 {
		c.Grace = DefaultGrace
	}
	return c.Batch.validate()
}

// Keeper holds the worker's key epochs. Safe for concurrent use.
type Keeper struct {
	cfg KeeperConfig

	rotMu  sync.Mutex // serializes rotations
	mu     sync.RWMutex
	cur    *Epoch
	old    map[string]retiring
	closed bool
}

type retiring struct {
	e  *Epoch
	at time.Time
}

// NewKeeper validates cfg and attests the first epoch.
func NewKeeper(ctx context.Context, cfg KeeperConfig) (*Keeper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	k := &Keeper{cfg: cfg, old: map[string]retiring{}}
	if _, err := k.Rotate(ctx); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *Keeper) now() time.Time {
	if k.cfg.Now != nil {
		return k.cfg.Now()
	}
	return time.Now()
}

// Current returns the epoch new work should use.
func (k *Keeper) Current() *Epoch {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.cur
}

// Lookup returns the current epoch or one still in its grace period.
func (k *Keeper) Lookup(id string) (*Epoch, bool) {
	k.prune()
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.cur != nil && k.cur.ID == id {
		return k.cur, true
	}
	r, ok := k.old[id]
	return r.e, ok
}

// Sign signs msg with the current epoch's key and returns the signature and
// the epoch's bundle id.
func (k *Keeper) Sign(msg []byte) ([]byte, string, error) {
	e := k.Current()
	if e == nil {
		return nil, "", ErrKeeperClosed
	}
	sig, err := e.Sign(msg)
	return sig, e.ID, err
}

// SignReceipt signs a receipt with the current epoch (see Epoch.SignReceipt).
func (k *Keeper) SignReceipt(r *attest.Receipt) (*attest.SignedReceipt, error) {
	e := k.Current()
	if e == nil {
		return nil, ErrKeeperClosed
	}
	return e.SignReceipt(r)
}

// SignFresh signs a receipt with the current epoch and waits for its
// fresh-mode batch (see Epoch.SignFresh).
func (k *Keeper) SignFresh(ctx context.Context, r *attest.Receipt) (*attest.SignedReceipt, []byte, error) {
	e := k.Current()
	if e == nil {
		return nil, nil, ErrKeeperClosed
	}
	return e.SignFresh(ctx, r)
}

// Rotate starts a new epoch now: new keys, a new random nonce, new
// evidence. The previous epoch keeps signing for Grace.
func (k *Keeper) Rotate(ctx context.Context) (*Epoch, error) {
	k.rotMu.Lock()
	defer k.rotMu.Unlock()
	sk, hk, err := newKeys()
	if err != nil {
		return nil, fmt.Errorf("rotating keys: %w", err)
	}
	e := &Epoch{keeper: k, sign: sk, hpke: hk, Started: k.now()}
	e.Window = attest.NewEpochWindow(e.Started, k.cfg.Epoch, k.cfg.Grace)
	if e.pre, err = newPresigner(sk); err != nil {
		return nil, fmt.Errorf("rotating keys: %w", err)
	}
	if _, err := rand.Read(e.Nonce[:]); err != nil {
		return nil, fmt.Errorf("rotating keys: epoch nonce: %w", err)
	}
	b, raw, err := buildBundle(ctx, k.cfg.Attester, sk.Public().(ed25519.PublicKey), hk.PublicKey().Bytes(), e.Sign, e.Nonce, e.Window, k.identity(), e.Started)
	if err != nil {
		e.retire()
		return nil, fmt.Errorf("rotating keys: %w", err)
	}
	e.Bundle, e.Raw, e.ID = b, raw, attest.BundleID(raw)
	e.batch = NewBatcher(k.cfg.Batch, func(ctx context.Context, nonce [32]byte) ([]byte, string, error) {
		_, raw, err := e.Attest(ctx, nonce)
		if err != nil {
			return nil, "", err
		}
		return raw, attest.BundleID(raw), nil
	})

	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		e.retire()
		return nil, ErrKeeperClosed
	}
	if prev := k.cur; prev != nil {
		// Never later than the end its bundles state.
		k.old[prev.ID] = retiring{e: prev, at: minTime(e.Started.Add(k.cfg.Grace), prev.Window.ErasedAt())}
	}
	k.cur = e
	k.mu.Unlock()
	k.prune()
	if k.cfg.OnRotate != nil {
		k.cfg.OnRotate(e)
	}
	return e, nil
}

// identity is the worker identity new epochs state.
func (k *Keeper) identity() attest.WorkerIdentity {
	k.mu.RLock()
	defer k.mu.RUnlock()
	id := k.cfg.Identity
	id.Models = slices.Clone(id.Models)
	return id
}

// SetModels changes the models the evidence names and starts a new epoch
// stating them (Rotate): admission grants a connection exactly the models
// its evidence names, so a worker whose engine gained or lost a model
// joins anew with this epoch. The current epoch keeps its own bundle (and
// fresh evidence for it keeps naming its models) for the grace period.
func (k *Keeper) SetModels(ctx context.Context, models []string) (*Epoch, error) {
	k.mu.Lock()
	k.cfg.Identity.Models = slices.Clone(models)
	k.mu.Unlock()
	e, err := k.Rotate(ctx)
	if err != nil {
		return nil, fmt.Errorf("new models: %w", err)
	}
	return e, nil
}

// prune retires epochs whose grace period is over, and erases the keys of
// a current epoch past the end of its window (rotation kept failing): its
// bundles promised that they would be gone by then.
func (k *Keeper) prune() {
	now := k.now()
	var done []*Epoch
	k.mu.Lock()
	for id, r := range k.old {
		if !now.Before(r.at) {
			done = append(done, r.e)
			delete(k.old, id)
		}
	}
	cur := k.cur
	k.mu.Unlock()
	for _, e := range done {
		e.retire()
	}
	if cur != nil && !now.Before(cur.Window.ErasedAt()) {
		cur.erase()
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// Run rotates the epoch every cfg.Epoch and retires old epochs, until ctx
// ends. A failed rotation is reported to OnError and retried after a tenth
// of the epoch (at most a minute), keeping the current epoch in service
// until the end of its stated window, when its keys are erased and signing
// fails until a rotation succeeds.
func (k *Keeper) Run(ctx context.Context) error {
	next := k.cfg.Epoch
	t := time.NewTimer(min(next, k.cfg.Grace))
	defer t.Stop()
	due := k.now().Add(next)
	if e := k.Current(); e != nil {
		// Rotate when the epoch's window says it ends, not an epoch
		// after Run started.
		due = e.Started.Add(next)
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		k.prune()
		wait := k.cfg.Grace
		if !k.now().Before(due) {
			if e, err := k.Rotate(ctx); err != nil {
				if k.cfg.OnError != nil {
					k.cfg.OnError(err)
				}
				wait = min(k.cfg.Epoch/10, time.Minute)
				due = k.now().Add(wait)
			} else {
				due = e.Started.Add(k.cfg.Epoch)
			}
		}
		t.Reset(max(min(wait, due.Sub(k.now())), time.Millisecond))
	}
}

// Close retires every epoch and stops their batchers. Signing afterwards
// fails.
func (k *Keeper) Close() {
	k.mu.Lock()
	k.closed = true
	all := []*Epoch{}
	if k.cur != nil {
		all = append(all, k.cur)
	}
	for _, r := range k.old {
		all = append(all, r.e)
	}
	k.cur, k.old = nil, map[string]retiring{}
	k.mu.Unlock()
	for _, e := range all {
		e.retire()
	}
}
