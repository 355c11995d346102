package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/worker/wire"
)

// sysTimeout bounds one system request (LDM, KICK).
const sysTimeout = 2 * time.Second

// onSubmit verifies a bundle, stores it, judges it and replies with the
// wire.AdmissionStatus it earns. The bundle authenticates itself (hardware evidence and
// its own key's signature), so anybody may submit anybody's bundle; only
// verified bundles are stored, which bounds what strangers can write.
func (s *Service) onSubmit(m *nats.Msg) {
	s.spawn(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st := s.submit(ctx, m.Data)
		s.reply(m, st)
	})
}

func (s *Service) submit(ctx context.Context, raw []byte) wire.AdmissionStatus {
	if len(raw) == 0 || len(raw) > attest.MaxBundleSize {
		return wire.AdmissionStatus{Error: "a bundle of 1 byte to 1 MiB is expected"}
	}
	id := attest.BundleID(raw)
	now := s.cfg.Now()
	v := &verdict{p: proven{evidenceID: id}, now: now}
	vd, err := s.verifier.Bundle(ctx, raw)
	if err != nil {
		v.err = fmt.Errorf("%w: %w", ErrEvidenceRejected, err)
		return wire.AdmissionStatus{EvidenceID: id, Reasons: []string{reason(v.err)}, EvaluatedAt: now.UTC()}
	}
	if _, err := s.evKV.Put(ctx, id, raw); err != nil {
		return wire.AdmissionStatus{EvidenceID: id, Error: "storing evidence failed"}
	}
	s.judge(ctx, v, vd)
	d := s.record(ctx, v)
	return statusOf(d)
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
		s.reply(m, wire.AdmissionStatus{EvidenceID: id, Error: "no decision recorded for this evidence"})
		return
	}
	s.reply(m, statusOf(d))
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
		now := s.cfg.Now()
		v := &verdict{p: proven{evidenceID: id}, now: now}
		vd, err := s.evidence(ctx, id)
		if err != nil {
			v.err, v.reasons = err, []string{reason(err)}
		} else {
			s.judge(ctx, v, vd)
			s.record(ctx, v)
		}
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

func reasonsText(rs []string) string {
	if len(rs) == 0 {
		return "no longer admitted"
	}
	b, _ := json.Marshal(rs)
	return string(b)
}
