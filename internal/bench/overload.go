package bench

import (
	"errors"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Overload is the overload run: a target offered a multiple of its
// measured peak in an open loop. It measures whatever the stack does with
// the excess (queue it, refuse it, time it out): goodput is the answers
// that succeeded, refusals are 503 and 429 answers (which must be quick and
// carry Retry-After), timeouts are requests with no answer within the
// run's client timeout.
type Overload struct {
	// OfferedRPS is the rate offered: Factor times the peak measured in
	// the same run (PeakRPS).
	OfferedRPS int     `json:"offered_rps"`
	Factor     float64 `json:"factor"`
	PeakRPS    float64 `json:"peak_rps"`
	Seconds    float64 `json:"seconds"`
	// TimeoutMs is the client's limit on one request; past it a request
	// counts as a timeout.
	TimeoutMs float64 `json:"timeout_ms"`
	Requests  int     `json:"requests"`
	// OK answers (2xx): their count, rate and latency.
	OK          int     `json:"ok"`
	GoodputRPS  float64 `json:"goodput_rps"`
	OKP50Ms     float64 `json:"ok_p50_ms"`
	OKP99Ms     float64 `json:"ok_p99_ms"`
	GoodputPeak float64 `json:"goodput_ratio"`
	// Refused answers (503, 429): count, latency, and how many carried a
	// Retry-After header.
	Refused         int     `json:"refused"`
	RefusedP50Ms    float64 `json:"refused_p50_ms"`
	RefusedP99Ms    float64 `json:"refused_p99_ms"`
	RefusedRetryAft int     `json:"refused_retry_after"`
	// Timeouts had no answer in time; Other are every other failure
	// (other statuses, transport errors).
	Timeouts   int            `json:"timeouts"`
	Other      int            `json:"other"`
	Codes      map[string]int `json:"codes,omitempty"`
	FirstError string         `json:"first_error,omitempty"`
}

// overloadConns bounds the client's connections in the overload run: well
// above what the stack serves at once, so that the excess reaches the
// gateway (which decides what to do with it) instead of queueing in the
// client.
const overloadConns = 2048

// overload offers t factor × peak requests per second for d; timeout is
// the client's limit on one request.
func overload(t Target, peak, factor float64, d, timeout time.Duration) Overload {
	rate := max(1, int(peak*factor+0.5))
	tr := &http.Transport{MaxIdleConnsPerHost: overloadConns, MaxConnsPerHost: overloadConns, DisableCompression: true,
		DialContext: (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext}
	defer tr.CloseIdleConnections()
	c := &http.Client{Timeout: timeout, Transport: tr}
	a := vegeta.NewAttacker(vegeta.Client(c))
	res := a.Attack(vegeta.NewStaticTargeter(t.vegeta()), vegeta.Rate{Freq: rate, Per: time.Second}, d, t.Name+"-overload")
	o := summarizeOverload(res)
	o.OfferedRPS, o.Factor, o.PeakRPS = rate, factor, peak
	o.Seconds = round(d.Seconds(), 3)
	o.TimeoutMs = ms(timeout)
	if peak > 0 {
		o.GoodputPeak = round(o.GoodputRPS/peak, 3)
	}
	return o
}

// summarizeOverload sorts a run's results into goodput, refusals,
// timeouts and other failures. Goodput is the OK answers per second over
// the span from the first request sent to the last answer.
func summarizeOverload(results <-chan *vegeta.Result) Overload {
	var (
		o           Overload
		ok, refused []time.Duration
		first, last time.Time
	)
	o.Codes = map[string]int{}
	for r := range results {
		o.Requests++
		if first.IsZero() || r.Timestamp.Before(first) {
			first = r.Timestamp
		}
		if end := r.End(); end.After(last) {
			last = end
		}
		o.Codes[strconv.Itoa(int(r.Code))]++
		switch {
		case r.Error == "" && r.Code >= 200 && r.Code <= 299:
			ok = append(ok, r.Latency)
		case r.Code == http.StatusServiceUnavailable || r.Code == http.StatusTooManyRequests:
			refused = append(refused, r.Latency)
			if r.Headers.Get("Retry-After") != "" {
				o.RefusedRetryAft++
			}
		case r.Code == 0 && isTimeout(r.Error):
			o.Timeouts++
		default:
			o.Other++
			if o.FirstError == "" {
				o.FirstError = r.Error
				if o.FirstError == "" {
					o.FirstError = "status " + strconv.Itoa(int(r.Code)) + ": " + string(truncate(r.Body, 200))
				}
			}
		}
	}
	o.OK, o.Refused = len(ok), len(refused)
	if span := last.Sub(first); span > 0 {
		o.GoodputRPS = round(float64(len(ok))/span.Seconds(), 1)
	}
	slices.Sort(ok)
	slices.Sort(refused)
	o.OKP50Ms, o.OKP99Ms = ms(quantile(ok, 0.5)), ms(quantile(ok, 0.99))
	o.RefusedP50Ms, o.RefusedP99Ms = ms(quantile(refused, 0.5)), ms(quantile(refused, 0.99))
	return o
}

// isTimeout tells a client timeout from other transport errors by its
// message (vegeta keeps only the text): net/http's "Client.Timeout
// exceeded", a context's "deadline exceeded", a socket's "i/o timeout".
func isTimeout(msg string) bool {
	return strings.Contains(msg, "Timeout") || strings.Contains(msg, "timeout") || strings.Contains(msg, "deadline exceeded")
}

var errNoPeak = errors.New("overload run: no peak measured to offer a multiple of")
