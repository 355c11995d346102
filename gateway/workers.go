package gateway

import (
	"net/http"
	"sort"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/teegate/teegate/gateway/admission"
	"github.com/teegate/teegate/worker/wire"
)

// Admissions is what the gateway reads of worker admission
// (admission.Service): the latest decision per evidence.
type Admissions interface {
	Decisions() []admission.Decision
}

// refusedWindow: a decision that no live connection presents any more
// still marks its models as known for this long, so a worker that was just
// evicted, or that retries between quarantined connections, makes the
// gateway answer 503 "no attested worker" rather than 404.
const refusedWindow = 4 * wire.RecordTTL

// knownModel reports whether some worker asked to serve model recently,
// whatever the policy said about it. A model that no admitted worker
// serves but a refused one wants is unavailable (503), not unknown (404):
// the client asked for the right model at a bad time.
// route says whether a request for model can be sent on: nil when an
// admitted worker serves it; the 503 "no attested worker" when only refused
// workers ask to serve it (the model exists, nobody may serve it now); 404
// model_not_found otherwise.
//
// wait is true for a model that is known but that no worker can take now
// (none serves it, or none has room): the request waits in the cold-start
// queue (awaitWorker). A model is known while a live worker serves it, for
// the model memory after one did, or when declared (coldstart.go).
func (g *Gateway) route(model string) (wait bool, e *APIError) {
	if _, ok := g.cfg.Directory.Model(model); ok {
		return !g.hasRoom(model) && g.cfg.Pending != nil, nil
	}
	// Only refused workers want the model: no attested worker may serve
	// it, and waiting would not change that (503 at once). An admitted one
	// that is not serving yet is worth waiting for.
	admitted, refused := g.knownModel(model)
	if g.cfg.Pending != nil && !(refused && !admitted) {
		if _, ok := g.cfg.Pending.Known(model); ok || admitted {
			return true, nil
		}
	}
	if admitted || refused {
		return false, errNoCapacity()
	}
	return false, errModelNotFound(model)
}

// knownModel reports whether current admission decisions that list model
// admitted a worker, refused one, or both.
func (g *Gateway) knownModel(model string) (admitted, refused bool) {
	if g.cfg.Admission == nil {
		return false, false
	}
	now := g.cfg.Now()
	seen := map[string]bool{}
	// Decisions come newest first: a worker's first is its latest.
	for _, d := range g.cfg.Admission.Decisions() {
		if seen[d.WorkerID] || !current(d, now) {
			continue
		}
		seen[d.WorkerID] = true
		for _, m := range d.Models {
			if m == model {
				if d.Allow {
					admitted = true
				} else {
					refused = true
				}
			}
		}
	}
	return admitted, refused
}

// current: a decision still speaks for a worker while a connection this
// replica knows presents it, while its admission lasts (a decision another
// replica made: the shared view has no connections), or for refusedWindow
// after it was made.
func current(d admission.Decision, now time.Time) bool {
	return len(d.Connections) > 0 || d.Allow && now.Before(d.ExpiresAt) || now.Sub(d.EvaluatedAt) <= refusedWindow
}

// WorkerStatus is one worker in GET /v1/attestation/workers: its latest
// admission decision and its registry record.
type WorkerStatus struct {
	WorkerID   string `json:"worker_id"`
	EvidenceID string `json:"evidence_id,omitempty"`
	// Decision is "admitted", "refused", or "unjudged" (a registry record
	// with no decision: the worker connected with static credentials).
	Decision string                   `json:"decision"`
	Reasons  []string                 `json:"reasons,omitempty"`
	Policy   string                   `json:"policy,omitempty"`
	Claims   *admission.ClaimsSummary `json:"claims,omitempty"`
	// EvidenceAgeSeconds is the age of the evidence now (-1 when unknown).
	EvidenceAgeSeconds int64     `json:"evidence_age_seconds"`
	Models             []string  `json:"models,omitempty"`
	EvaluatedAt        time.Time `json:"evaluated_at,omitzero"`
	ExpiresAt          time.Time `json:"expires_at,omitzero"`
	// Connections is how many live connections present this evidence;
	// Serving whether the worker's registry record is live.
	Connections int       `json:"connections"`
	Serving     bool      `json:"serving"`
	HeartbeatAt time.Time `json:"heartbeat_at,omitzero"`
	// From the live record: its capacity, requests in flight, whether its
	// engine can serve and whether it drains.
	MaxConcurrency int  `json:"max_concurrency,omitempty"`
	InFlight       int  `json:"in_flight"`
	Ready          bool `json:"ready"`
	Draining       bool `json:"draining,omitempty"`
}

// workerLister is implemented by directories that can list live records
// (KVDirectory).
type workerLister interface {
	Workers() []wire.WorkerRecord
}

// listWorkers serves GET /v1/attestation/workers to admin keys: the fleet
// as the admission service judged it, refused workers included, with the
// reasons an operator acts on. It shows claims summaries, never content.
func (g *Gateway) listWorkers(c *fiber.Ctx) error {
	if key, _ := c.Locals(localKey).(APIKey); !key.Admin {
		return send(c, errForbidden())
	}
	out := fiber.Map{"object": "list", "data": g.workerStatuses()}
	if g.cfg.Pending != nil {
		out["pending"] = g.pendingStatuses(c.UserContext())
	}
	return c.JSON(out)
}

func (g *Gateway) workerStatuses() []WorkerStatus {
	now := g.cfg.Now()
	byID := map[string]*WorkerStatus{}
	if g.cfg.Admission != nil {
		// Decisions come newest first: the first per worker is its latest.
		for _, d := range g.cfg.Admission.Decisions() {
			if byID[d.WorkerID] != nil || !current(d, now) {
				continue
			}
			ws := &WorkerStatus{
				WorkerID: d.WorkerID, EvidenceID: d.EvidenceID, Decision: "refused", Reasons: d.Reasons,
				Policy: d.Policy, Claims: d.Claims, EvidenceAgeSeconds: -1, Models: d.Models,
				EvaluatedAt: d.EvaluatedAt, ExpiresAt: d.ExpiresAt, Connections: len(d.Connections),
			}
			if d.Allow {
				ws.Decision = "admitted"
			}
			if d.Claims != nil && !d.Claims.CreatedAt.IsZero() {
				ws.EvidenceAgeSeconds = int64(now.Sub(d.Claims.CreatedAt) / time.Second)
			}
			byID[d.WorkerID] = ws
		}
	}
	if l, ok := g.cfg.Directory.(workerLister); ok {
		for _, rec := range l.Workers() {
			ws := byID[rec.ID]
			if ws == nil {
				ws = &WorkerStatus{WorkerID: rec.ID, EvidenceID: rec.EvidenceID, Decision: "unjudged", EvidenceAgeSeconds: -1}
				for _, m := range rec.Models {
					ws.Models = append(ws.Models, m.ID)
				}
				byID[rec.ID] = ws
			}
			ws.Serving, ws.HeartbeatAt = true, rec.HeartbeatAt
			ws.MaxConcurrency, ws.InFlight, ws.Ready, ws.Draining = rec.MaxConcurrency, rec.InFlight, rec.Ready, rec.Draining
		}
	}
	out := make([]WorkerStatus, 0, len(byID))
	for _, ws := range byID {
		out = append(out, *ws)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].WorkerID < out[j].WorkerID })
	return out
}

func errAuditOff() *APIError {
	return &APIError{Status: http.StatusNotImplemented, Type: "server_error", Code: "audit_unavailable",
		Message: "This gateway has no audit log configured."}
}

// auditState serves GET /v1/audit/state to admin keys: the audit chain's
// head, last checkpoint and whether the chain since it links.
func (g *Gateway) auditState(c *fiber.Ctx) error {
	if key, _ := c.Locals(localKey).(APIKey); !key.Admin {
		return send(c, errForbidden())
	}
	if g.cfg.AuditState == nil {
		return send(c, errAuditOff())
	}
	st, err := g.cfg.AuditState(c.UserContext())
	if err != nil {
		g.log.Error("reading audit state failed", "err", err)
		return send(c, errInternal())
	}
	return c.JSON(st)
}
