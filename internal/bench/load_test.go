package bench

import (
	"net/http"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

func TestQuantileNearestRank(t *testing.T) {
	var v []time.Duration
	for i := 1; i <= 1000; i++ {
		v = append(v, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {0.999, 999 * time.Millisecond}, {1, time.Second}, {0, time.Millisecond}} {
		if got := quantile(v, c.q); got != c.want {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if quantile(nil, 0.5) != 0 {
		t.Error("empty input")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := Quick().validate(); err != nil {
		t.Fatal(err)
	}
	if err := Full().validate(); err != nil {
		t.Fatal(err)
	}
	c := Quick()
	c.Rates = []int{100, 0}
	if c.validate() == nil {
		t.Error("a zero rate was accepted")
	}
	c = Quick()
	c.TTFTSamples = 0
	if c.validate() == nil {
		t.Error("zero TTFT samples were accepted")
	}
}

// TestSummarizeOverload sorts results into goodput, refusals (with and
// without Retry-After), timeouts and other failures.
func TestSummarizeOverload(t *testing.T) {
	ch := make(chan *vegeta.Result, 16)
	t0 := time.Unix(1000, 0)
	add := func(code uint16, lat time.Duration, errMsg string, h http.Header) {
		ch <- &vegeta.Result{Code: code, Timestamp: t0, Latency: lat, Error: errMsg, Headers: h}
	}
	for range 4 {
		add(200, time.Second, "", nil)
	}
	add(503, 2*time.Millisecond, "", http.Header{"Retry-After": {"1"}})
	add(429, 4*time.Millisecond, "", http.Header{"Retry-After": {"2"}})
	add(503, 6*time.Millisecond, "", nil)
	add(0, 10*time.Second, `Post "http://x": context deadline exceeded (Client.Timeout exceeded while awaiting headers)`, nil)
	add(500, time.Millisecond, "", nil)
	add(0, time.Millisecond, "connection refused", nil)
	close(ch)
	o := summarizeOverload(ch)
	if o.Requests != 10 || o.OK != 4 || o.Refused != 3 || o.RefusedRetryAft != 2 || o.Timeouts != 1 || o.Other != 2 {
		t.Fatalf("counts: %+v", o)
	}
	if o.RefusedP50Ms != 4 || o.RefusedP99Ms != 6 || o.OKP50Ms != 1000 {
		t.Errorf("latencies: %+v", o)
	}
	// 4 answers over the 10 s from the first request to the last answer.
	if o.GoodputRPS != 0.4 || o.FirstError != "status 500: " {
		t.Errorf("goodput %v, first error %q", o.GoodputRPS, o.FirstError)
	}
}
