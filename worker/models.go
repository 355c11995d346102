package worker

// The worker's models and capacity as the registry shows them. An engine
// whose list may change (engine.Refresher: the openai engine in front of
// Ollama or vLLM) is asked every ModelRefresh. A failed answer makes the
// record say ready: false, so gateways stop routing here until the engine
// answers again; a changed list re-advertises the worker:
//
//   - with a Keeper the evidence names the models, and admission grants
//     subscriptions to exactly those (gateway/admission), so the worker
//     starts a new key epoch whose evidence names the new list
//     (enclave.Keeper.SetModels) and joins with it, make before break
//     (join.go): the new connection serves the new list, then the old one
//     retires with its record;
//   - with a static connection (no evidence) it replaces its micro service
//     on the same connection and republishes its record.
//
// The record's in_flight count is published on every heartbeat and, in
// between, when it moved by wire.InFlightStep since the last publication:
// enough for gateways to spread load across replicas without a write per
// request.

import (
	"context"
	"slices"
	"time"

	"github.com/teegate/teegate/worker/engine"
	"github.com/teegate/teegate/worker/wire"
)

// DefaultModelRefresh is the default Config.ModelRefresh: a model added to
// the engine is offered within about this long (plus a key epoch's
// attestation when the evidence must name it).
const DefaultModelRefresh = 15 * time.Second

// Ready reports whether the engine answered the worker's last model
// refresh.
func (w *Worker) Ready() bool { return w.ready.Load() }

// Models returns the models the worker serves now.
func (w *Worker) Models() []engine.Model {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.models)
}

func modelInfos(ms []engine.Model) []wire.ModelInfo {
	out := make([]wire.ModelInfo, len(ms))
	for i, m := range ms {
		out[i] = wire.ModelInfo{ID: m.ID, Created: m.Created, OwnedBy: m.OwnedBy}
	}
	return out
}

// countInFlight moves the in-flight count and asks for a publication when
// it moved far enough from the published one.
func (w *Worker) countInFlight(d int64) {
	n := w.inFlight.Add(d)
	diff := n - w.published.Load()
	if diff < 0 {
		diff = -diff
	}
	if diff >= int64(wire.InFlightStep(w.cfg.MaxConcurrency)) || n == 0 && diff > 0 {
		w.askPublish()
	}
}

func (w *Worker) askPublish() {
	select {
	case w.pubCh <- struct{}{}:
	default:
	}
}

// setReady records the engine's state and publishes a change at once.
func (w *Worker) setReady(ready bool) {
	if w.ready.Swap(ready) != ready {
		if ready {
			w.log.Info("engine serving again")
		} else {
			w.log.Warn("engine not serving: the worker's record says not ready")
		}
		w.askPublish()
	}
}

// refreshModels asks the engine for its models every ModelRefresh until
// the worker stops.
func (w *Worker) refreshModels(r engine.Refresher) {
	defer close(w.refDone)
	t := time.NewTicker(w.cfg.ModelRefresh)
	defer t.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(w.ctx, max(w.cfg.ModelRefresh, 10*time.Second))
		models, err := r.RefreshModels(ctx)
		if err == nil && len(models) > 0 {
			err = w.applyModels(ctx, models)
			if err != nil {
				w.log.Warn("re-advertising changed models failed", "err", err)
			}
			w.setReady(true)
		} else if w.ctx.Err() == nil {
			if err != nil {
				// The engine's error says nothing of any request.
				w.log.Debug("model refresh failed", "err", err)
			}
			w.setReady(false)
		}
		cancel()
	}
}

// sameModels: a and b list the same ids in the same order.
func sameModels(a, b []engine.Model) bool {
	return slices.EqualFunc(a, b, func(x, y engine.Model) bool { return x.ID == y.ID })
}

// applyModels re-advertises the worker when the engine's list changed.
func (w *Worker) applyModels(ctx context.Context, models []engine.Model) error {
	w.mu.Lock()
	same := sameModels(w.models, models)
	w.mu.Unlock()
	if same {
		return nil
	}
	w.connMu.Lock()
	w.mu.Lock()
	prev := w.models
	w.models = models
	w.mu.Unlock()
	w.log.Info("engine models changed", "models", len(models))
	if k := w.cfg.Keeper; k != nil {
		w.connMu.Unlock()
		ids := make([]string, len(models))
		for i, m := range models {
			ids[i] = m.ID
		}
		// The new epoch's evidence names the new list; its rotation
		// reaches the worker through EpochRotated (or the heartbeat),
		// which joins with it.
		if _, err := k.SetModels(ctx, ids); err != nil {
			// Unchanged, so the next refresh tries again.
			w.mu.Lock()
			w.models = prev
			w.mu.Unlock()
			return err
		}
		w.nudge()
		return nil
	}
	defer w.connMu.Unlock()
	w.mu.Lock()
	old := w.cur
	w.mu.Unlock()
	if old == nil {
		return nil
	}
	sv := &serving{nc: old.nc, models: models}
	if err := w.serveOn(ctx, sv); err != nil {
		w.mu.Lock()
		w.models = prev
		w.mu.Unlock()
		return err
	}
	w.mu.Lock()
	w.cur = sv
	w.mu.Unlock()
	if err := w.publishRecord(ctx); err != nil {
		w.log.Warn("publishing registry record failed", "err", err)
	}
	w.retire(old)
	return nil
}
