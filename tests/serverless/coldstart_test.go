package serverless

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// A request sent while no worker runs completes once a worker starts 3 s
// later; then 200 requests sent to zero workers all complete after two
// workers start. `teegate dev --workers 0` runs the gateway; the workers
// are `teegate worker` processes with the simulated TEE, which they say.
func TestColdStartFromZero(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process")
	}
	d := startDev(t, "--workers", "0")
	if !strings.Contains(d.out.String(), "No worker runs") {
		t.Fatalf("the banner does not say how to start a worker:\n%s", d.out.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := newClient(256)

	// One request, no worker.
	first := make(chan answer, 1)
	sent := time.Now()
	go func() { first <- chat(ctx, client, d.url, d.key, false, 8) }()
	waitFor(t, 10*time.Second, "the request to wait with a ticket", func() bool {
		here, queued := waiting(t, d.url, d.key, "teegate-builtin")
		return here == 1 && queued == 1
	})
	time.Sleep(time.Until(sent.Add(3 * time.Second))) // the scenario: the worker starts 3 s later
	select {
	case a := <-first:
		t.Fatalf("answered with no worker: %+v", a)
	default:
	}
	w1 := d.worker(t, "w1")
	a := <-first
	if !a.ok(false) {
		t.Fatalf("the waiting request: %+v", a)
	}
	if !strings.Contains(w1.out.String(), "SIMULATED TEE") {
		t.Errorf("the worker does not say its TEE is simulated:\n%s", w1.out.String())
	}
	if err := w1.term(t, 30*time.Second); err != nil {
		t.Fatalf("worker exit after SIGTERM: %v", err)
	}
	waitFor(t, 30*time.Second, "the fleet to be empty", func() bool { return serving(t, d.url, d.key) == 0 })

	// 200 requests (half streamed) with no worker; two workers start.
	const n = 200
	res := make(chan answer, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); res <- chat(ctx, client, d.url, d.key, i%2 == 1, 8) }()
	}
	waitFor(t, 20*time.Second, "200 requests waiting", func() bool {
		here, queued := waiting(t, d.url, d.key, "teegate-builtin")
		return here == n && queued == n
	})
	d.worker(t, "w2")
	d.worker(t, "w3")
	wg.Wait()
	close(res)
	i, bad := 0, 0
	for a := range res {
		if !a.ok(a.firstByte || strings.HasPrefix(a.body, "data:")) {
			bad++
			if bad < 5 {
				t.Errorf("request %d: %d %v %s", i, a.status, a.err, tail(a.body, 300))
			}
		}
		i++
	}
	if bad > 0 {
		t.Fatalf("%d of %d requests failed", bad, n)
	}
	waitFor(t, 10*time.Second, "the tickets deleted", func() bool {
		here, queued := waiting(t, d.url, d.key, "teegate-builtin")
		return here == 0 && queued == 0
	})
}

// With the queue full, and past the cold-start timeout, the client gets 503
// with Retry-After, OpenAI-shaped.
func TestColdStartRefusals(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process")
	}
	// In-flight limits above the queue, so that the queue's own bound
	// refuses (with default limits and no worker they equal the queue's
	// length and refuse the same request as overloaded).
	d := startDev(t, "--workers", "0", "--queue-length", "3", "--cold-start-timeout", "2s", "--max-inflight", "100", "--max-inflight-per-model", "100")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := newClient(16)
	res := make(chan answer, 3)
	for range 3 {
		go func() { res <- chat(ctx, client, d.url, d.key, false, 8) }()
	}
	waitFor(t, 10*time.Second, "three waiting", func() bool { here, _ := waiting(t, d.url, d.key, "teegate-builtin"); return here == 3 })
	full := chat(ctx, client, d.url, d.key, true, 8)
	if full.status != 503 || full.retryAfter == "" || !strings.Contains(full.body, `"code":"queue_full"`) || full.elapsed > time.Second {
		t.Fatalf("queue full: %+v", full)
	}
	for range 3 {
		a := <-res
		if a.status != 503 || a.retryAfter == "" || !strings.Contains(a.body, `"code":"cold_start_timeout"`) || a.elapsed < 2*time.Second {
			t.Fatalf("past the timeout: %+v", a)
		}
	}
	waitFor(t, 10*time.Second, "the tickets deleted", func() bool {
		here, queued := waiting(t, d.url, d.key, "teegate-builtin")
		return here == 0 && queued == 0
	})
	// Default limits with no worker: the in-flight limit is the queue's
	// length, and sheds the one beyond it at once (503 overloaded).
	d2 := startDev(t, "--workers", "0", "--queue-length", "2", "--cold-start-timeout", "3s")
	for range 2 {
		go func() { res <- chat(ctx, client, d2.url, d2.key, false, 8) }()
	}
	waitFor(t, 10*time.Second, "two waiting", func() bool { here, _ := waiting(t, d2.url, d2.key, "teegate-builtin"); return here == 2 })
	if shed := chat(ctx, client, d2.url, d2.key, false, 8); shed.status != 503 || shed.retryAfter != "1" || !strings.Contains(shed.body, `"code":"overloaded"`) || shed.elapsed > time.Second {
		t.Fatalf("shed: %+v", shed)
	}
	for range 2 {
		<-res
	}
}
