package browser

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/teegate/teegate/gateway"
	"github.com/teegate/teegate/gateway/ui"
	"github.com/teegate/teegate/internal/stacktest"
)

const adminKey = "sk-auditor-browser-test"

// chromium finds Debian's chromium, or skips (fails under make test).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	need(t, "chromium is not installed (make chromium, or apt-get install chromium)")
	return ""
}

func need(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("TEEGATE_REQUIRE_CHROMIUM") == "1" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// browser starts a fresh headless Chromium and returns its context.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1360, 1100),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	// Generous: compiling 40 MB of WebAssembly on a loaded 2-core machine.
	ctx, cancelTimeout := context.WithTimeout(ctx, 5*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	return ctx
}

func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(t.ArtifactDir(), name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", p)
}

// page runs browser steps, failing the test with what was being done.
type page struct {
	t   *testing.T
	ctx context.Context
}

func (p page) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, steps...); err != nil {
		// What the page said, for the failure message.
		state, _ := chromedp.Run(p.ctx, chromedp.Evaluate[string](`["verifier-status","login-error","fleet-error","lookup-error","verdict"].map(id => { const e = document.getElementById(id); return id + "=" + (e ? JSON.stringify(e.textContent) : "-"); }).join(" ")`))
		shot(p.t, p.ctx, "failure")
		p.t.Fatalf("%s: %v\npage: %s", what, err, state)
	}
}

func (p page) text(sel string) string {
	p.t.Helper()
	s, err := chromedp.Run(p.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		p.t.Fatalf("reading %s: %v", sel, err)
	}
	return s
}

func (p page) eval(js string) {
	p.t.Helper()
	if _, err := chromedp.Run(p.ctx, chromedp.Evaluate[bool](js)); err != nil {
		p.t.Fatalf("evaluating: %v", err)
	}
}

// steps reads the verification steps the page shows: name → status.
func (p page) steps() map[string]string {
	p.t.Helper()
	nodes, err := chromedp.Run(p.ctx, chromedp.Evaluate[[]map[string]string](
		`Array.from(document.querySelectorAll('#steps li[data-step]')).map(li => ({step: li.dataset.step, status: li.dataset.status}))`))
	if err != nil {
		p.t.Fatal(err)
	}
	m := map[string]string{}
	for _, n := range nodes {
		m[n["step"]] = n["status"]
	}
	return m
}

func post(t *testing.T, url, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+stacktest.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	return resp, string(b)
}

// The auditor's page, in a real browser, against the stack teegate dev
// runs: it lists the simulated worker with its decision, looks up the
// receipt of a request just made and verifies it with the in-browser
// verifier, step by step; a tampered receipt fails at the signature step,
// a tampered response at the hashes step, named as the CLI names them.
func TestAuditorPageVerifiesInTheBrowser(t *testing.T) {
	if !ui.Built() {
		need(t, "the in-browser verifier is not built (make wasm)")
	}
	ctx := browser(t)
	s := stacktest.Start(t)
	sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.AddKey(sctx, adminKey, gateway.APIKey{Name: "auditor", Tenant: "audit", Admin: true}); err != nil {
		t.Fatal(err)
	}
	body := `{"model":"teegate-builtin","messages":[{"role":"user","content":"Tell me about lighthouses."}],"max_tokens":12}`
	resp, answer := post(t, s.URL+"/v1/chat/completions", body)
	reqID := resp.Header.Get("x-request-id")
	stacktest.Eventually(t, 30*time.Second, func() bool {
		r, err := http.NewRequest("GET", s.URL+"/v1/attestation/receipts/"+reqID, nil)
		if err != nil {
			return false
		}
		r.Header.Set("Authorization", "Bearer "+stacktest.APIKey)
		res, err := http.DefaultClient.Do(r)
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	}, "the stored receipt")

	// Sign in; the fleet shows the simulated worker, admitted by the dev
	// policy; the verifier finishes loading.
	p := page{t, ctx}
	const row = `#fleet tbody tr[data-worker="teegate-worker-0"][data-decision="admitted"]`
	p.do("signing in",
		chromedp.Navigate(s.URL+"/ui"),
		chromedp.WaitVisible(chromedp.CSS(`#key`)),
		chromedp.SendKeys(chromedp.CSS(`#key`), adminKey),
		chromedp.Click(chromedp.CSS(`#connect`)),
		chromedp.WaitVisible(chromedp.CSS(row)),
		chromedp.WaitVisible(chromedp.CSS(`#audit [data-audit]`)))
	p.do("loading the verifier", chromedp.WaitVisible(chromedp.CSS(`#verifier-status.ok`)),
		chromedp.WaitVisible(chromedp.CSS(`#audit [data-audit]`)))
	if d, tee := p.text(row+` .decision`), p.text(row+` td:nth-child(3)`); d != "admitted" || !strings.Contains(tee, "simulated") {
		t.Fatalf("fleet row: decision %q, tee %q", d, tee)
	}
	// The key is never in the URL.
	if href, err := chromedp.Run(ctx, chromedp.Location()); err != nil || strings.Contains(href, adminKey) {
		t.Fatalf("location %q (%v)", href, err)
	}
	shot(t, ctx, "1-fleet")

	// The worker's full claims, verified in the browser.
	p.do("showing claims",
		chromedp.Click(chromedp.CSS(`#allow-sim`)),
		chromedp.Click(chromedp.CSS(row+` button`)),
		chromedp.WaitVisible(chromedp.CSS(`#claims-verdict.ok`)))
	if claims := p.text(`#claims-json`); !strings.Contains(claims, `"tee": "simulated"`) || !strings.Contains(claims, `"report_data_matched": true`) {
		t.Fatalf("claims: %s", claims)
	}
	shot(t, ctx, "2-claims")

	// The receipt of the request made above, with its exact bytes.
	p.do("verifying the receipt",
		chromedp.SetAttributeValue(chromedp.CSS(`#bytes`), "open", ""),
		chromedp.SetValue(chromedp.CSS(`#req-bytes`), body),
		chromedp.SetValue(chromedp.CSS(`#resp-bytes`), answer),
		chromedp.SetValue(chromedp.CSS(`#policy`), "dev"),
		chromedp.SendKeys(chromedp.CSS(`#rid`), reqID),
		chromedp.Click(chromedp.CSS(`#lookup`)),
		chromedp.WaitVisible(chromedp.CSS(`#verdict[data-result="verified"]`)))
	for _, step := range []string{"receipt", "evidence", "key binding", "signature", "hashes", "policy"} {
		if st := p.steps()[step]; st != "ok" {
			t.Errorf("step %s: %q", step, st)
		}
	}
	if v := p.text(`#verdict`); !strings.Contains(v, reqID) {
		t.Errorf("verdict %q", v)
	}
	shot(t, ctx, "3-receipt-verified")

	// A tampered receipt: one character of the signature changed.
	p.do("opening the receipt", chromedp.SetAttributeValue(chromedp.CSS(`#material`), "open", ""))
	p.eval(`(() => { const r = document.getElementById('receipt'); const i = r.value.indexOf('"signature":"') + 16;
		r.value = r.value.slice(0, i) + (r.value[i] === 'A' ? 'B' : 'A') + r.value.slice(i + 1); return true; })()`)
	p.do("verifying the tampered receipt",
		chromedp.Click(chromedp.CSS(`#verify`)),
		chromedp.WaitVisible(chromedp.CSS(`#verdict[data-result="failed"][data-cause="signature"]`)))
	if st := p.steps(); st["signature"] != "failed" || st["evidence"] != "ok" || st["hashes"] != "not_reached" {
		t.Errorf("tampered receipt steps: %v", st)
	}
	if v := p.text(`#verdict`); !strings.Contains(v, "signature: verifying receipt: receipt signature invalid") {
		t.Errorf("tampered receipt verdict %q", v)
	}
	shot(t, ctx, "4-tampered-receipt")

	// The real receipt again, with a changed response byte.
	p.do("verifying a tampered response",
		chromedp.Click(chromedp.CSS(`#lookup`)),
		chromedp.WaitVisible(chromedp.CSS(`#verdict[data-result="verified"]`)),
		chromedp.SetValue(chromedp.CSS(`#resp-bytes`), answer+" "),
		chromedp.Click(chromedp.CSS(`#verify`)),
		chromedp.WaitVisible(chromedp.CSS(`#verdict[data-result="failed"][data-cause="response hash"]`)))
	if st := p.steps(); st["hashes"] != "failed" || st["signature"] != "ok" || st["policy"] != "not_reached" {
		t.Errorf("tampered response steps: %v", st)
	}
	if v := p.text(`#verdict`); !strings.Contains(v, "response hash mismatch") {
		t.Errorf("tampered response verdict %q", v)
	}
	shot(t, ctx, "5-tampered-response")
}

// Without the wasm file the page says how to build it rather than failing
// silently; the page's own files carry a CSP that allows no other origin.
func TestUIServesItsFilesWithCSP(t *testing.T) {
	s := stacktest.Start(t)
	for _, p := range []string{"/ui/", "/ui/app.js", "/ui/style.css"} {
		res, err := http.Get(s.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(res.Header.Get("Content-Security-Policy"), "default-src 'none'") {
			t.Errorf("%s: %d csp %q", p, res.StatusCode, res.Header.Get("Content-Security-Policy"))
		}
	}
	res, err := http.Get(s.URL + "/ui/verifier.wasm")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	switch {
	case ui.Built() && (res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/wasm"):
		t.Errorf("verifier: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	case !ui.Built() && (res.StatusCode != 404 || !strings.Contains(string(b), "make build")):
		t.Errorf("verifier missing: %d %s", res.StatusCode, b)
	}
	// The audit state is for admin keys only.
	for _, tc := range []struct {
		key    string
		status int
	}{{stacktest.APIKey, 403}, {adminKey, 200}, {"", 401}} {
		if tc.key == adminKey {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if err := s.AddKey(ctx, adminKey, gateway.APIKey{Name: "auditor", Tenant: "audit", Admin: true}); err != nil {
				t.Fatal(err)
			}
			cancel()
		}
		req, _ := http.NewRequest("GET", s.URL+"/v1/audit/state", nil)
		if tc.key != "" {
			req.Header.Set("Authorization", "Bearer "+tc.key)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.status || tc.status == 200 && !strings.Contains(string(b), `"records":`) {
			t.Errorf("audit state with %q: %d %s", tc.key, res.StatusCode, b)
		}
	}
	if res, err := http.Get(s.URL + "/ui/../../etc/passwd"); err == nil {
		res.Body.Close()
		if res.StatusCode == 200 {
			t.Error("path escape served")
		}
	}
}
