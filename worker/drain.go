package worker

// Leaving without failing anybody: Drain (SIGTERM), Idle (scale to zero),
// and Kill, which leaves the way a crash does (tests).

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrDraining: the worker is draining and takes no new connection or
// service.
var ErrDraining = errors.New("worker draining")

// Drain makes the worker leave without failing a request: it advertises
// draining in its registry record (gateways stop routing to it), stops
// taking requests on its connection (the request subjects are
// unsubscribed; what the server delivered before is still served), waits
// until ctx ends (the grace period) for the requests in flight to finish,
// then withdraws as Stop does. It returns how many requests were still in
// flight when the grace period ended (0 when all finished), and Stop's
// error. A request it abandons that got no byte yet is dispatched again by
// the gateway (its worker's connection is gone).
func (w *Worker) Drain(ctx context.Context) (abandoned int, err error) {
	w.mu.Lock()
	if !w.started || w.stopped {
		w.mu.Unlock()
		return 0, nil
	}
	w.mu.Unlock()
	if !w.draining.Swap(true) {
		w.log.Info("draining", "in_flight", w.inFlight.Load())
	}
	// No new connection takes work from here on (join, model changes).
	w.connMu.Lock()
	w.mu.Lock()
	cur := w.cur
	w.mu.Unlock()
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	if err := w.publishRecord(pctx); err != nil {
		w.log.Warn("publishing the draining record failed", "err", err)
	}
	cancel()
	if cur != nil && cur.svc != nil {
		if err := cur.svc.Stop(); err != nil {
			w.log.Warn("stopping the service failed", "err", err)
		}
		// The server has the unsubscriptions once a round trip is done:
		// every request it sent before them is in this client's queues
		// and is served like the rest.
		if err := cur.nc.FlushTimeout(5 * time.Second); err != nil {
			w.log.Warn("flushing the unsubscriptions failed", "err", err)
		}
	}
	w.connMu.Unlock()
	for !w.drained(cur) {
		select {
		case <-w.idleCh:
		case <-ctx.Done():
			abandoned = int(w.inFlight.Load())
			w.log.Warn("drain grace period over with requests in flight", "in_flight", abandoned)
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return abandoned, w.Stop(sctx)
		}
	}
	w.log.Info("drained")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return 0, w.Stop(sctx)
}

// drained reports that nothing is in flight, checked again after a round
// trip to the server so that a request the subscription had queued but
// not yet handed over is counted.
func (w *Worker) drained(cur *serving) bool {
	if w.inFlight.Load() != 0 {
		return false
	}
	if cur != nil {
		_ = cur.nc.FlushTimeout(time.Second)
	}
	return w.inFlight.Load() == 0
}

// Draining reports whether Drain was called.
func (w *Worker) Draining() bool { return w.draining.Load() }

// InFlight is the number of requests the worker is serving now.
func (w *Worker) InFlight() int { return int(w.inFlight.Load()) }

// Idle returns a channel closed once the worker has served nothing for d:
// no request in flight and none ended within d. It is how a worker scales
// to zero (teegate worker --idle-exit). Call it after Start; the channel
// never closes once the worker stopped.
func (w *Worker) Idle(d time.Duration) <-chan struct{} {
	ch := make(chan struct{})
	w.mu.Lock()
	wctx := w.ctx
	w.mu.Unlock()
	if wctx == nil || d <= 0 {
		return ch
	}
	go func() {
		t := time.NewTimer(d)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
			}
			if w.inFlight.Load() != 0 {
				t.Reset(d)
				continue
			}
			idle := time.Since(time.Unix(0, w.lastEnd.Load()))
			if idle >= d {
				close(ch)
				return
			}
			t.Reset(d - idle)
		}
	}()
	return ch
}

// Kill stops the worker the way a crash does, for tests of what the others
// do about it: its connections close at once, nothing is deregistered or
// answered, and its record stays until it expires. The engine calls in
// flight are cancelled. Stop afterwards only releases what is left.
func (w *Worker) Kill() {
	w.mu.Lock()
	if !w.started || w.stopped {
		w.mu.Unlock()
		return
	}
	cur, quar := w.cur, w.quar
	cancel := w.cancel
	w.mu.Unlock()
	for _, sv := range []*serving{cur, quar} {
		if sv != nil {
			// Close, not drain: no unsubscription, no goodbye.
			sv.nc.Close()
		}
	}
	cancel()
	w.log.Info("killed")
}

// checkDraining is serveOn's guard.
func (w *Worker) checkDraining() error {
	if w.draining.Load() {
		return fmt.Errorf("serving: %w", ErrDraining)
	}
	return nil
}
