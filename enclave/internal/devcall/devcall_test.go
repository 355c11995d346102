package devcall

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	errFailed = errors.New("test request failed")
	errClosed = errors.New("test caller closed")
)

func newCaller(call func([64]byte) ([]byte, error), retries int) *Caller {
	return New(Config{What: "test report", Interface: "fake", Call: call, Retries: retries, ErrFailed: errFailed, ErrClosed: errClosed})
}

// busyFor fails with err n times, then echoes the report data.
func busyFor(n int32, err error, calls *atomic.Int32) func([64]byte) ([]byte, error) {
	return func(rd [64]byte) ([]byte, error) {
		if calls.Add(1) <= n {
			return nil, fmt.Errorf("writing inblob: %w", err)
		}
		return rd[:], nil
	}
}

func TestRetries(t *testing.T) {
	for _, tt := range []struct {
		name      string
		fails     int32
		err       error
		retries   int
		wantErr   []error
		wantCalls int32
	}{
		{"ok at once", 0, nil, 0, nil, 1},
		{"busy twice, default retries", 2, syscall.EBUSY, 0, nil, 3},
		{"again twice, default retries", 2, syscall.EAGAIN, 0, nil, 3},
		{"busy past default retries", 4, syscall.EBUSY, 0, []error{errFailed, syscall.EBUSY}, 4},
		{"busy once, no retries", 1, syscall.EBUSY, -1, []error{errFailed, syscall.EBUSY}, 1},
		{"busy once, one retry", 1, syscall.EBUSY, 1, nil, 2},
		{"other error not retried", 1, syscall.EIO, 0, []error{errFailed, syscall.EIO}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			c := newCaller(busyFor(tt.fails, tt.err, &calls), tt.retries)
			defer c.Close()
			rd := [64]byte{1, 2, 3}
			raw, err := c.Do(context.Background(), rd)
			for _, want := range tt.wantErr {
				if !errors.Is(err, want) {
					t.Fatalf("err %v, want %v", err, want)
				}
			}
			if tt.wantErr == nil && (err != nil || string(raw) != string(rd[:])) {
				t.Fatalf("raw %x err %v", raw, err)
			}
			if calls.Load() != tt.wantCalls {
				t.Fatalf("%d calls, want %d", calls.Load(), tt.wantCalls)
			}
		})
	}
}

func TestErrorNamesEvidenceAndInterface(t *testing.T) {
	c := newCaller(func([64]byte) ([]byte, error) { return nil, syscall.EIO }, -1)
	defer c.Close()
	_, err := c.Do(context.Background(), [64]byte{})
	const want = "requesting test report via fake: test request failed: input/output error"
	if err == nil || err.Error() != want {
		t.Fatalf("err %q, want %q", err, want)
	}
}

// blocking is an interface call that signals when it starts and returns
// only when released.
type blocking struct {
	started chan struct{}
	release chan struct{}
	inCall  atomic.Bool
}

func newBlocking() *blocking {
	return &blocking{started: make(chan struct{}, 8), release: make(chan struct{})}
}

func (b *blocking) call(rd [64]byte) ([]byte, error) {
	b.inCall.Store(true)
	defer b.inCall.Store(false)
	b.started <- struct{}{}
	<-b.release
	return rd[:], nil
}

func TestContext(t *testing.T) {
	b := newBlocking()
	c := newCaller(b.call, 0)

	abandoned, abandon := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := c.Do(abandoned, [64]byte{})
		first <- err
	}()
	<-b.started
	abandon()
	// The abandoned request returns while its call goes on.
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("abandoned request: %v, want context.Canceled", err)
	}
	// That call still holds the interface: a request waiting for it gives
	// up when its own deadline passes, without reaching the interface.
	short, stop := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer stop()
	if _, err := c.Do(short, [64]byte{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting request: %v, want DeadlineExceeded", err)
	}
	if len(b.started) != 0 {
		t.Fatal("a request reached the interface while another call held it")
	}
	close(b.release)
	if _, err := c.Do(context.Background(), [64]byte{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestEndedContextNeverCalls(t *testing.T) {
	var calls atomic.Int32
	c := newCaller(busyFor(0, nil, &calls), 0)
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 100 {
		if _, err := c.Do(ctx, [64]byte{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v, want context.Canceled", err)
		}
	}
	if calls.Load() != 0 {
		t.Fatalf("%d calls with an ended ctx", calls.Load())
	}
}

func TestContextEndsRetryWait(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int32
	c := newCaller(func([64]byte) ([]byte, error) {
		if calls.Add(1) == 1 {
			cancel() // the retry wait that follows sees ctx end
		}
		return nil, syscall.EBUSY
	}, 10)
	defer c.Close()
	if _, err := c.Do(ctx, [64]byte{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	// Close waits for the background call, so the count is final after it.
	c.Close()
	if calls.Load() != 1 {
		t.Fatalf("%d calls after cancel, want 1", calls.Load())
	}
}

func TestClose(t *testing.T) {
	errDevice := errors.New("device refuses to close")
	for _, tt := range []struct {
		name    string
		closeFn func() error
		want    error
	}{
		{"no close func", nil, nil},
		{"close ok", func() error { return nil }, nil},
		{"close fails", func() error { return errDevice }, errDevice},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var closes atomic.Int32
			cfg := Config{What: "test report", Interface: "fake", ErrFailed: errFailed, ErrClosed: errClosed,
				Call: func(rd [64]byte) ([]byte, error) { return rd[:], nil }}
			if tt.closeFn != nil {
				cfg.Close = func() error { closes.Add(1); return tt.closeFn() }
			}
			c := New(cfg)
			if err := c.Close(); !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Close: %v, want %v", err, tt.want)
			}
			if err := c.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if tt.closeFn != nil && closes.Load() != 1 {
				t.Fatalf("interface closed %d times", closes.Load())
			}
			if _, err := c.Do(context.Background(), [64]byte{}); err != errClosed {
				t.Fatalf("Do after Close: %v, want %v", err, errClosed)
			}
		})
	}
}

func TestCloseWaitsForCall(t *testing.T) {
	b := newBlocking()
	var closedDuringCall atomic.Bool
	c := New(Config{What: "test report", Interface: "fake", ErrFailed: errFailed, ErrClosed: errClosed,
		Call:  b.call,
		Close: func() error { closedDuringCall.Store(b.inCall.Load()); return nil },
	})
	errc := make(chan error, 1)
	go func() { _, err := c.Do(context.Background(), [64]byte{}); errc <- err }()
	<-b.started
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	// Close has to wait for the call; only the call's end lets it finish.
	close(b.release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if closedDuringCall.Load() {
		t.Fatal("interface closed under a call in flight")
	}
}

func BenchmarkDo(b *testing.B) {
	c := newCaller(func(rd [64]byte) ([]byte, error) { return rd[:], nil }, 0)
	defer c.Close()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Do(ctx, [64]byte{}); err != nil {
			b.Fatal(err)
		}
	}
}
