package devcall

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"
)

// DefaultRetries is how often a busy interface is retried when
// Config.Retries is 0.
const DefaultRetries = 3

// firstWait is the pause before the first retry; it doubles after each.
const firstWait = 50 * time.Millisecond

// Options are the knobs enclave/tdx and enclave/snp expose as their own
// Options, which convert to this type: keep the fields in step.
type Options struct {
	// DevicePath is the guest device; empty means the package's default.
	DevicePath string
	// DisableConfigfs skips configfs-tsm and goes straight to the device.
	DisableConfigfs bool
	// Retries is how often a busy interface (EBUSY, EAGAIN) is retried;
	// 0 means DefaultRetries, negative means never.
	Retries int
}

// Config describes one interface and how its failures are reported.
type Config struct {
	// What names the evidence in error messages: "TDX quote",
	// "SEV-SNP report".
	What string
	// Interface names the kernel interface, for error messages.
	Interface string
	// Call asks the interface for evidence over the report data.
	Call func(reportData [64]byte) ([]byte, error)
	// Close releases the interface; nil when there is nothing to release.
	Close func() error
	// Retries is how often a busy interface is retried; 0 means
	// DefaultRetries, negative means never.
	Retries int
	// ErrFailed is wrapped, together with the interface's own error, when
	// the interface refuses a request.
	ErrFailed error
	// ErrClosed is returned as is by requests after Close.
	ErrClosed error
}

// Caller serializes requests to one interface. Safe for concurrent use.
type Caller struct {
	cfg Config
	// sem holds one token while a request (or Close) owns the interface.
	sem       chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
}

// New returns a Caller for cfg.
func New(cfg Config) *Caller {
	switch {
	case cfg.Retries == 0:
		cfg.Retries = DefaultRetries
	case cfg.Retries < 0:
		cfg.Retries = 0
	}
	return &Caller{cfg: cfg, sem: make(chan struct{}, 1), closed: make(chan struct{})}
}

// Do returns what the interface gives for reportData, unchecked. When ctx
// ends first, Do returns ctx's error and the call goes on in the background,
// holding the interface so that the next request does not collide with it.
func (c *Caller) Do(ctx context.Context, reportData [64]byte) ([]byte, error) {
	// select picks at random among ready cases, so without this check a
	// request whose ctx has already ended could still reach the interface
	// and, finishing first, even succeed.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("waiting for the %s interface: %w", c.cfg.What, err)
	}
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the %s interface: %w", c.cfg.What, ctx.Err())
	case <-c.closed:
		return nil, c.cfg.ErrClosed
	}
	// select picks at random among ready cases: re-check after acquiring.
	select {
	case <-c.closed:
		<-c.sem
		return nil, c.cfg.ErrClosed
	default:
	}
	type result struct {
		raw []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer func() { <-c.sem }()
		raw, err := c.retrying(ctx, reportData)
		done <- result{raw, err}
	}()
	select {
	case r := <-done:
		return r.raw, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("requesting %s: %w", c.cfg.What, ctx.Err())
	}
}

// retrying calls the interface, retrying while it is busy (another process
// is using it, or the host's quoting service is slow).
func (c *Caller) retrying(ctx context.Context, rd [64]byte) ([]byte, error) {
	wait := firstWait
	for attempt := 0; ; attempt++ {
		raw, err := c.cfg.Call(rd)
		if err == nil {
			return raw, nil
		}
		if attempt >= c.cfg.Retries || !busy(err) {
			return nil, fmt.Errorf("requesting %s via %s: %w: %w", c.cfg.What, c.cfg.Interface, c.cfg.ErrFailed, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("requesting %s via %s: %w", c.cfg.What, c.cfg.Interface, ctx.Err())
		case <-t.C:
		}
		wait *= 2
	}
}

func busy(err error) bool {
	return errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.EAGAIN)
}

// Close releases the interface once; later calls return nil. Requests after
// Close fail with Config.ErrClosed.
func (c *Caller) Close() error {
	var err error
	c.closeOnce.Do(func() {
		close(c.closed)
		// Wait for a request in flight so the interface is not closed
		// under it; the token is never returned, as nothing may follow.
		c.sem <- struct{}{}
		if c.cfg.Close != nil {
			if cerr := c.cfg.Close(); cerr != nil {
				err = fmt.Errorf("closing %s interface: %w", c.cfg.What, cerr)
			}
		}
	})
	return err
}
