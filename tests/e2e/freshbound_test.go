package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/teegate/teegate/internal/stack"
	"github.com/teegate/teegate/internal/stacktest"
	"github.com/teegate/teegate/worker/wire"
)

// Fresh mode writes one bundle per batch, and no worker key may have more
// stored than its evidence rate allows: traffic beyond it gets a clean
// error instead of growing the evidence bucket — 503 with Retry-After and
// the code evidence_rate_limited, not a 500.
func TestFreshModeEvidenceIsBounded(t *testing.T) {
	s := stacktest.Start(t, func(c *stack.Config) { c.Admission.EvidenceRate, c.Admission.EvidenceBurst = 0.5, 2 })
	kv, err := s.JS.KeyValue(t.Context(), wire.EvidenceBucket)
	if err != nil {
		t.Fatal(err)
	}
	count := func() int {
		keys, err := kv.Keys(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return len(keys)
	}
	before := count()
	start := time.Now()
	ok, refused := 0, 0
	for i := range 8 {
		resp, body := post(t, s.URL+"/v1/chat/completions", stacktest.APIKey, chatBody("teegate-builtin", false), "Teegate-Nonce", fmt.Sprintf("bound-%d", i))
		switch {
		case resp.StatusCode == 200:
			ok++
		case resp.StatusCode == 503:
			var e struct {
				Error struct {
					Message string `json:"message"`
					Code    string `json:"code"`
				} `json:"error"`
			}
			if json.Unmarshal(body, &e) != nil || e.Error.Message == "" || e.Error.Code != "evidence_rate_limited" {
				t.Fatalf("refused fresh request not OpenAI-shaped with its code: %s", body)
			}
			if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
				t.Fatalf("refused fresh request without Retry-After: %q", resp.Header.Get("Retry-After"))
			}
			refused++
		default:
			t.Fatalf("fresh request: %d %s", resp.StatusCode, body)
		}
	}
	allowed := 2 + int(math.Ceil(time.Since(start).Seconds()*0.5))
	if grown := count() - before; grown > allowed || ok > allowed {
		t.Fatalf("%d fresh bundles stored, %d answered, for a bound of %d", grown, ok, allowed)
	}
	if ok == 0 {
		t.Fatal("no fresh request answered at all")
	}
	if refused == 0 && time.Since(start) < 10*time.Second {
		t.Fatal("the evidence bound never applied")
	}
}
