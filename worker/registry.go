package worker

// The worker's registry record: published on the serving connection and
// refreshed by the heartbeat.

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/worker/wire"
)

// EnsureRegistry creates or opens the worker registry bucket.
func EnsureRegistry(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := wire.EnsureBucket(ctx, js, wire.RegistryConfig())
	if err != nil {
		return nil, fmt.Errorf("opening worker registry: %w", err)
	}
	return kv, nil
}

func (w *Worker) publishRecord(ctx context.Context) error {
	w.mu.Lock()
	sv := w.cur
	if sv == nil {
		w.mu.Unlock()
		return nil
	}
	w.record.HeartbeatAt = time.Now().UTC()
	w.record.Models = modelInfos(sv.models)
	n := w.inFlight.Load()
	w.published.Store(n)
	w.record.InFlight = int(n)
	w.record.Ready = w.ready.Load()
	w.record.Draining = w.draining.Load()
	switch n := w.getNotary(); {
	case sv.epoch != "":
		w.record.EvidenceID = sv.epoch
	case n != nil:
		w.record.EvidenceID = n.EvidenceID()
	}
	b, err := json.Marshal(w.record)
	w.mu.Unlock()
	if err != nil {
		return fmt.Errorf("encoding registry record: %w", err)
	}
	if _, err := sv.kv.Put(ctx, w.recordKey(sv), b); err != nil {
		return fmt.Errorf("publishing registry record: %w", err)
	}
	return nil
}

// recordKey is the registry key of sv's record: the evidence id it was
// admitted on (the only key its permissions let it write), or the worker id
// on a connection with static credentials.
func (w *Worker) recordKey(sv *serving) string {
	if sv.epoch != "" {
		return sv.epoch
	}
	return w.cfg.ID
}

func (w *Worker) heartbeat() {
	defer close(w.hbDone)
	t := time.NewTicker(w.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-w.pubCh:
			// The in-flight count or readiness changed enough to say so
			// before the next tick.
			ctx, cancel := context.WithTimeout(w.ctx, w.cfg.Heartbeat)
			if err := w.publishRecord(ctx); err != nil && w.ctx.Err() == nil {
				w.log.Warn("publishing registry record failed", "err", err)
			}
			cancel()
		case <-t.C:
			if k := w.cfg.Keeper; k != nil {
				// A new key epoch needs a new connection: it is how the
				// worker notices the keeper's rotations.
				w.mu.Lock()
				cur := w.cur
				w.mu.Unlock()
				if ep := k.Current(); cur != nil && ep != nil && ep.ID != cur.epoch && !cur.flagged.Load() {
					w.nudge()
				}
			}
			ctx, cancel := context.WithTimeout(w.ctx, w.cfg.Heartbeat)
			if err := w.publishRecord(ctx); err != nil && w.ctx.Err() == nil {
				w.log.Warn("heartbeat failed", "err", err)
			}
			cancel()
		}
	}
}
