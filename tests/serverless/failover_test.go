package serverless

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/client"
)

// load sends n concurrent requests (every other one streamed), calls
// during once `after` answers arrived, and returns every answer; each
// complete one is verified afterwards, offline, against the evidence its
// receipt names (the Go SDK's transcript verifier), so a cut stream is
// seen byte for byte as the client got it.
func load(t *testing.T, d *dev, n, maxTokens, after int, during func()) []verified {
	t.Helper()
	hc := newClient(n)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out := make([]verified, n)
	var wg sync.WaitGroup
	var done atomic.Int64
	var once sync.Once
	fire := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := i%2 == 1
			out[i] = verified{answer: chat(ctx, hc, d.url, d.key, stream, maxTokens), stream: stream}
			if done.Add(1) == int64(after) {
				once.Do(func() { close(fire) })
			}
		}()
	}
	go func() {
		select {
		case <-fire:
			during()
		case <-ctx.Done():
		}
	}()
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatal("requests hung past their deadline")
	}
	evidence := map[string][]byte{}
	for i := range out {
		a := &out[i]
		if a.ok(a.stream) {
			a.verifyErr = verify(t, d, evidence, a.answer, a.stream, maxTokens)
			a.verified = a.verifyErr == nil
		}
	}
	return out
}

// verify checks one complete answer's receipt against its evidence.
func verify(t *testing.T, d *dev, evidence map[string][]byte, a answer, stream bool, maxTokens int) error {
	t.Helper()
	var sr *attest.SignedReceipt
	if stream {
		res, err := attest.DigestSSE(strings.NewReader(a.body))
		if err != nil {
			return err
		}
		sr = res.Receipt
	} else {
		var err error
		if sr, err = attest.ParseReceiptHeader(a.receipt); err != nil {
			return err
		}
	}
	if sr == nil {
		return errors.New("no receipt")
	}
	id := sr.Receipt.EvidenceID
	if evidence[id] == nil {
		req, _ := http.NewRequest("GET", d.url+"/v1/attestation/evidence/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+d.key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			return fmt.Errorf("evidence %s: %d %v", id, resp.StatusCode, err)
		}
		evidence[id] = b
	}
	_, err := client.VerifyTranscript(context.Background(), &client.Transcript{Endpoint: "/v1/chat/completions", Stream: stream,
		Request: []byte(fmt.Sprintf(chatBody, maxTokens, stream)), Response: []byte(a.body), Receipt: sr, Evidence: evidence[id]},
		client.Options{AllowSimulated: true})
	return err
}

type verified struct {
	answer
	stream, verified bool
	verifyErr        error
}

// once reports an answer that is one answer: a non-stream body is one JSON
// value; a stream has at most one receipt and one [DONE], [DONE] last.
func (a verified) once() bool {
	if !a.stream || a.status != 200 {
		return a.status != 200 || json.Valid([]byte(a.body))
	}
	return strings.Count(a.body, "teegate_receipt") <= 1 && strings.Count(a.body, "data: [DONE]") <= 1
}

// A worker killed (SIGKILL) during 500 concurrent requests: every request
// ends with a verified completion or a clean OpenAI error, none hangs,
// none is answered twice, and every one that had not received a byte
// (every non-stream one, and streams before their first event) completes
// on the other worker with a receipt that verifies.
func TestWorkerKilledDuringLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process")
	}
	d := startDev(t, "--workers", "0")
	w1 := d.worker(t, "w1", "--latency-per-token", "5ms")
	d.worker(t, "w2", "--latency-per-token", "5ms")
	waitFor(t, 60*time.Second, "two workers serving", func() bool { return serving(t, d.url, d.key) == 2 })
	res := load(t, d, 500, 40, 50, func() { w1.kill() })
	var ok, clean int
	for i, a := range res {
		switch {
		case !a.once():
			t.Fatalf("request %d answered twice: %s", i, tail(a.body, 400))
		case a.ok(a.stream) && a.verified:
			ok++
		case a.ok(a.stream):
			t.Fatalf("request %d: a completion whose receipt did not verify: %v", i, a.verifyErr)
		case !a.firstByte && !(a.stream && a.status == 200):
			t.Fatalf("request %d had no byte and did not complete on the other worker: %d %v %s", i, a.status, a.err, tail(a.body, 300))
		case a.cleanError(a.stream):
			clean++
		default:
			t.Fatalf("request %d ended neither with a completion nor a clean error: %d %v %s", i, a.status, a.err, tail(a.body, 300))
		}
	}
	t.Logf("500 requests, w1 killed after 50 answers: %d verified completions, %d clean errors (streams cut after their first byte)", ok, clean)
	if ok < 250 {
		t.Fatalf("only %d completions", ok)
	}
}

// SIGTERM of a worker during load: it drains (stops taking requests,
// finishes those in flight, deregisters, exits 0) and no request fails.
func TestWorkerDrainDuringLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process")
	}
	d := startDev(t, "--workers", "0")
	w1 := d.worker(t, "w1", "--latency-per-token", "5ms")
	d.worker(t, "w2", "--latency-per-token", "5ms")
	waitFor(t, 60*time.Second, "two workers serving", func() bool { return serving(t, d.url, d.key) == 2 })
	res := load(t, d, 300, 40, 30, func() { _ = w1.cmd.Process.Signal(syscall.SIGTERM) })
	select {
	case <-w1.done:
		if w1.err != nil {
			t.Fatalf("the drained worker exited with %v", w1.err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the drained worker did not exit")
	}
	for i, a := range res {
		if !a.ok(a.stream) || !a.verified || !a.once() {
			t.Fatalf("request %d failed during a drain: %d %v %v %s", i, a.status, a.err, a.verifyErr, tail(a.body, 300))
		}
	}
}
