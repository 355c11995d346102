package bench

import (
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Target is one endpoint under load: a URL, the body to POST and the
// headers to send with it.
type Target struct {
	Name   string
	URL    string
	Body   []byte
	Header http.Header
}

func (t Target) vegeta() vegeta.Target {
	return vegeta.Target{Method: http.MethodPost, URL: t.URL, Body: t.Body, Header: t.Header}
}

// Latency is a run's outcome: counts, throughput and exact percentiles
// (every latency is kept and sorted, no estimator).
type Latency struct {
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	RPS      float64 `json:"rps"`
	P50Ms    float64 `json:"p50_ms"`
	P99Ms    float64 `json:"p99_ms"`
	P999Ms   float64 `json:"p999_ms"`
	MaxMs    float64 `json:"max_ms"`
	// Codes counts the answers by HTTP status ("0" for transport errors).
	Codes map[string]int `json:"codes,omitempty"`
	// FirstError is one error message, to tell what went wrong.
	FirstError string `json:"first_error,omitempty"`
}

// maxOpenConns bounds the connections of an open-loop run: past it, a
// target that cannot keep up queues requests in the client (their latency
// counts the wait) instead of the run opening sockets until the machine
// runs out of ports.
const maxOpenConns = 512

// openLoop sends rate requests per second for d, whatever the answers'
// pace (new requests do not wait for old ones), as clients on the
// internet do.
func openLoop(t Target, rate int, d time.Duration) Latency {
	c, done := runClient(maxOpenConns)
	defer done()
	a := vegeta.NewAttacker(vegeta.Client(c))
	return collect(a.Attack(vegeta.NewStaticTargeter(t.vegeta()), vegeta.Rate{Freq: rate, Per: time.Second}, d, t.Name))
}

// closedLoop keeps conns requests in flight for d: the target's peak.
func closedLoop(t Target, conns int, d time.Duration) Latency {
	c, done := runClient(conns)
	defer done()
	n := uint64(conns)
	a := vegeta.NewAttacker(vegeta.Client(c), vegeta.Workers(n), vegeta.MaxWorkers(n))
	return collect(a.Attack(vegeta.NewStaticTargeter(t.vegeta()), vegeta.ConstantPacer{}, d, t.Name))
}

// runClient is one run's HTTP client, keep-alive, at most conns
// connections; done closes them, so that no run inherits another's.
func runClient(conns int) (*http.Client, func()) {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true,
		DialContext: (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext}
	return &http.Client{Timeout: 30 * time.Second, Transport: tr}, tr.CloseIdleConnections
}

func collect(results <-chan *vegeta.Result) Latency {
	var out Latency
	lat := make([]time.Duration, 0, 1<<14)
	var first, last time.Time
	for r := range results {
		out.Requests++
		if first.IsZero() || r.Timestamp.Before(first) {
			first = r.Timestamp
		}
		if end := r.End(); end.After(last) {
			last = end
		}
		if out.Codes == nil {
			out.Codes = map[string]int{}
		}
		out.Codes[strconv.Itoa(int(r.Code))]++
		if r.Error != "" || r.Code < 200 || r.Code > 299 {
			out.Errors++
			if out.FirstError == "" {
				out.FirstError = r.Error
				if out.FirstError == "" {
					out.FirstError = "status " + strconv.Itoa(int(r.Code)) + ": " + string(truncate(r.Body, 200))
				}
			}
			continue
		}
		lat = append(lat, r.Latency)
	}
	if span := last.Sub(first); span > 0 {
		out.RPS = round(float64(len(lat))/span.Seconds(), 1)
	}
	slices.Sort(lat)
	out.P50Ms = ms(quantile(lat, 0.50))
	out.P99Ms = ms(quantile(lat, 0.99))
	out.P999Ms = ms(quantile(lat, 0.999))
	if len(lat) > 0 {
		out.MaxMs = ms(lat[len(lat)-1])
	}
	return out
}

// quantile is the nearest-rank quantile of sorted values.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return round(float64(d)/float64(time.Millisecond), 3) }

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
