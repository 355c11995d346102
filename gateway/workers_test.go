package gateway

import (
	"encoding/json"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/teegate/teegate/gateway/admission"
	"github.com/teegate/teegate/internal/natsembed"
	"github.com/teegate/teegate/worker/wire"
)

type fakeKeys map[string]APIKey

func (k fakeKeys) Lookup(s string) (APIKey, bool) { r, ok := k[s]; return r, ok }

type fakeDir []wire.WorkerRecord

func (d fakeDir) Model(id string) (wire.ModelInfo, bool) {
	for _, r := range d {
		for _, m := range r.Models {
			if m.ID == id {
				return m, true
			}
		}
	}
	return wire.ModelInfo{}, false
}
func (d fakeDir) Models() []wire.ModelInfo     { return nil }
func (d fakeDir) Workers() []wire.WorkerRecord { return d }

type fakeAdm []admission.Decision

func (a fakeAdm) Decisions() []admission.Decision { return a }

func testGateway(t *testing.T, dir fakeDir, adm fakeAdm, now time.Time) *Gateway {
	t.Helper()
	srv, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("gw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	g, err := New(Config{Conn: nc, Keys: fakeKeys{"user": {Name: "u"}, "admin": {Name: "a", Admin: true}},
		Directory: dir, Admission: adm, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func do(t *testing.T, g *Gateway, method, path, key, body string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.App().Test(req, -1)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestWorkersAndRefusedModels(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	adm := fakeAdm{
		{WorkerID: "bad", EvidenceID: "e2", Allow: false, Reasons: []string{"simulated TEE is not accepted"}, Models: []string{"refused-model"},
			Claims:      &admission.ClaimsSummary{TEE: "simulated", Simulated: true, CreatedAt: now.Add(-90 * time.Second)},
			EvaluatedAt: now.Add(-time.Second), Connections: []admission.Connection{{ClientID: 7}}},
		{WorkerID: "good", EvidenceID: "e1", Allow: true, Models: []string{"m"}, EvaluatedAt: now.Add(-2 * time.Second)},
		// Long gone: neither listed nor making its model known.
		{WorkerID: "old", EvidenceID: "e0", Allow: false, Models: []string{"gone-model"}, EvaluatedAt: now.Add(-time.Hour)},
	}
	dir := fakeDir{{ID: "good", Models: []wire.ModelInfo{{ID: "m"}}, HeartbeatAt: now, MaxConcurrency: 8, InFlight: 3, Ready: true},
		{ID: "static", Models: []wire.ModelInfo{{ID: "s"}}}}
	g := testGateway(t, dir, adm, now)

	chat := func(model string) string {
		return `{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}`
	}
	tests := []struct {
		name, model string
		status      int
		code        string
	}{
		{"only refused workers: 503", "refused-model", 503, "no_capacity"},
		{"refused long ago: 404", "gone-model", 404, "model_not_found"},
		{"never asked: 404", "nope", 404, "model_not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := do(t, g, "POST", "/v1/chat/completions", "user", chat(tt.model))
			if status != tt.status || !strings.Contains(body, `"code":"`+tt.code+`"`) {
				t.Fatalf("%d %s", status, body)
			}
		})
	}

	if status, _ := do(t, g, "GET", "/v1/attestation/workers", "user", ""); status != 403 {
		t.Fatalf("non-admin: %d", status)
	}
	status, body := do(t, g, "GET", "/v1/attestation/workers", "admin", "")
	var l struct {
		Data []WorkerStatus `json:"data"`
	}
	if status != 200 || json.Unmarshal([]byte(body), &l) != nil {
		t.Fatalf("%d %s", status, body)
	}
	got := map[string]WorkerStatus{}
	for _, w := range l.Data {
		got[w.WorkerID] = w
	}
	if len(got) != 3 {
		t.Fatalf("workers %s", body)
	}
	if b := got["bad"]; b.Decision != "refused" || b.Reasons[0] != "simulated TEE is not accepted" || b.EvidenceAgeSeconds != 90 || b.Connections != 1 || b.Serving {
		t.Fatalf("bad %+v", b)
	}
	if g := got["good"]; g.Decision != "admitted" || !g.Serving || g.EvidenceAgeSeconds != -1 || g.MaxConcurrency != 8 || g.InFlight != 3 || !g.Ready {
		t.Fatalf("good %+v", g)
	}
	if s := got["static"]; s.Decision != "unjudged" || !s.Serving || len(s.Models) != 1 {
		t.Fatalf("static %+v", s)
	}
}
