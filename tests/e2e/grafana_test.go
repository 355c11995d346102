package e2e

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/teegate/teegate/internal/stacktest"
)

// The dashboard in deploy/grafana queries only metrics the product
// registers: every teegate_* name in every panel's expression is a family
// that /metrics serves after a unary and a streamed request.
func TestGrafanaDashboardQueriesExistingMetrics(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/grafana/teegate-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if dash.UID == "" || dash.Title == "" || len(dash.Panels) == 0 {
		t.Fatalf("dashboard uid %q title %q panels %d", dash.UID, dash.Title, len(dash.Panels))
	}

	reg := prometheus.NewRegistry()
	s := stacktest.Start(t, withMetrics(reg))
	chat := `{"model":"teegate-builtin","messages":[{"role":"user","content":"Hello"}],"max_tokens":4}`
	for _, body := range []string{chat, strings.Replace(chat, `"max_tokens":4`, `"max_tokens":4,"stream":true`, 1)} {
		if resp, b := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, body); resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
	}
	var fams map[string]bool
	stacktest.Eventually(t, 30*time.Second, func() bool {
		f, _ := scrape(t, s.URL)
		fams = map[string]bool{}
		for name := range f {
			fams[name] = true
		}
		return fams["teegate_gateway_tokens_total"]
	}, "token counts")

	name := regexp.MustCompile(`teegate_[a-z_]+`)
	used := 0
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, n := range name.FindAllString(tg.Expr, -1) {
				used++
				base := n
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(n, suf); ok && fams[b] {
						base = b
					}
				}
				if !fams[base] {
					t.Errorf("panel %q queries %s, which /metrics does not serve", p.Title, n)
				}
			}
		}
	}
	if used == 0 {
		t.Fatal("the dashboard queries no teegate metric")
	}
	// And every family the product serves is on the dashboard, so a new
	// metric gets a panel (or is named here as deliberately left off).
	leftOff := map[string]bool{"teegate_gateway_receipts_stored_total": true}
	for f := range fams {
		if strings.HasPrefix(f, "teegate_") && !leftOff[f] && !strings.Contains(string(raw), f) {
			t.Errorf("metric %s has no panel", f)
		}
	}
}
