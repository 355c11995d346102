package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"
)

// TTFT is the time from sending a streamed request to reading its first
// SSE data event, measured one request at a time.
type TTFT struct {
	Samples int     `json:"samples"`
	Errors  int     `json:"errors"`
	P50Ms   float64 `json:"p50_ms"`
	P99Ms   float64 `json:"p99_ms"`
	// FirstError is one error message, to tell what went wrong.
	FirstError string `json:"first_error,omitempty"`
}

// measureTTFT takes n samples of each target, interleaved (one of each in
// turn), so that a change in the machine's load touches all alike.
func measureTTFT(targets []Target, n int) []TTFT {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}}
	defer client.CloseIdleConnections()
	lat := make([][]time.Duration, len(targets))
	out := make([]TTFT, len(targets))
	// One unmeasured request each opens the connections.
	for _, t := range targets {
		_, _ = firstEvent(client, t)
	}
	for range n {
		for i, t := range targets {
			d, err := firstEvent(client, t)
			if err != nil {
				out[i].Errors++
				if out[i].FirstError == "" {
					out[i].FirstError = err.Error()
				}
				continue
			}
			lat[i] = append(lat[i], d)
		}
	}
	for i := range targets {
		slices.Sort(lat[i])
		out[i].Samples = len(lat[i])
		out[i].P50Ms = ms(quantile(lat[i], 0.5))
		out[i].P99Ms = ms(quantile(lat[i], 0.99))
	}
	return out
}

// firstEvent sends one streamed request and returns the time until its
// first "data:" line, then reads the stream to its end.
func firstEvent(client *http.Client, t Target) (time.Duration, error) {
	req, err := http.NewRequest(http.MethodPost, t.URL, bytes.NewReader(t.Body))
	if err != nil {
		return 0, err
	}
	req.Header = t.Header.Clone()
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return 0, fmt.Errorf("%s: status %d: %s", t.Name, resp.StatusCode, b)
	}
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadSlice('\n')
		if bytes.HasPrefix(line, []byte("data:")) {
			d := time.Since(start)
			_, _ = io.Copy(io.Discard, br)
			return d, nil
		}
		if err != nil {
			return 0, fmt.Errorf("%s: stream ended before its first event: %w", t.Name, err)
		}
	}
}
