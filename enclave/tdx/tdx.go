package tdx

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-tdx-guest/client"

	atdx "github.com/teegate/teegate/attest/tdx"
	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/enclave/internal/devcall"
)

// Names of the two kernel interfaces, as Quoter.Interface reports them.
const (
	InterfaceConfigfs = "configfs-tsm"
	InterfaceDevice   = "/dev/tdx_guest"
)

// DefaultDevicePath is the TDX guest device of Linux 6.2 and later.
const DefaultDevicePath = "/dev/tdx_guest"

var (
	// ErrNoDevice: neither configfs-tsm with the tdx_guest provider nor the
	// TDX guest device is available (not a TD, or the driver is missing).
	ErrNoDevice = errors.New("no TDX quote interface")
	// ErrQuoteFailed: the kernel or the quoting service refused the request.
	ErrQuoteFailed = errors.New("TDX quote request failed")
	// ErrReportDataMismatch: the quote returned does not carry the report
	// data that was asked for.
	ErrReportDataMismatch = errors.New("TDX quote carries other report data")
	// ErrClosed: the Quoter was closed.
	ErrClosed = errors.New("TDX quoter closed")
)

// Options configure Open. The fields stay in step with devcall.Options,
// which Open converts them to.
type Options struct {
	// DevicePath is the TDX guest device; empty means DefaultDevicePath.
	DevicePath string
	// DisableConfigfs skips configfs-tsm and goes straight to the device.
	DisableConfigfs bool
	// Retries is how often a busy interface (EBUSY, EAGAIN) is retried;
	// 0 means 3, negative means never.
	Retries int
}

// source is the seam between the Quoter and the kernel: one call that turns
// report data into a raw quote.
type source struct {
	name  string
	quote func(reportData [64]byte) ([]byte, error)
	close func() error
}

// Quoter produces TDX quotes. Safe for concurrent use; requests are served
// one at a time.
type Quoter struct {
	iface string
	dev   *devcall.Caller
}

var _ enclave.CPUSource = (*Quoter)(nil)

// Open finds the TD's quote interface: configfs-tsm when its provider is
// tdx_guest, otherwise the TDX guest device. It fails with ErrNoDevice
// outside a TD.
func Open(ctx context.Context, opts Options) (*Quoter, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	src, err := openPlatform(opts)
	if err != nil {
		return nil, fmt.Errorf("opening TDX quote interface: %w", err)
	}
	return newQuoter(src, opts.Retries), nil
}

// FromProvider wraps a go-tdx-guest QuoteProvider (configfs-tsm, or a fake
// from go-tdx-guest's testing package). IsSupported is not consulted: the
// caller chose the provider.
func FromProvider(p client.QuoteProvider) *Quoter { return newQuoter(providerSource(p), 0) }

func providerSource(p client.QuoteProvider) source {
	return source{name: InterfaceConfigfs, quote: p.GetRawQuote}
}

// FromDevice wraps an opened go-tdx-guest Device (the /dev/tdx_guest
// ioctls: TDREPORT, then GetQuote). Close closes it.
func FromDevice(d client.Device) *Quoter { return newQuoter(deviceSource(d), 0) }

func deviceSource(d client.Device) source {
	return source{
		name:  InterfaceDevice,
		quote: func(rd [64]byte) ([]byte, error) { return client.GetRawQuote(d, rd) },
		close: d.Close,
	}
}

func newQuoter(src source, retries int) *Quoter {
	return &Quoter{iface: src.name, dev: devcall.New(devcall.Config{
		What:      "TDX quote",
		Interface: src.name,
		Call:      src.quote,
		Close:     src.close,
		Retries:   retries,
		ErrFailed: ErrQuoteFailed,
		ErrClosed: ErrClosed,
	})}
}

// Kind is "tdx".
func (q *Quoter) Kind() string { return enclave.KindTDX }

// Interface names the kernel interface in use (InterfaceConfigfs or
// InterfaceDevice), for the worker's start-up log.
func (q *Quoter) Interface() string { return q.iface }

// CPUEvidence returns a TDX quote over reportData.
func (q *Quoter) CPUEvidence(ctx context.Context, reportData [64]byte) (enclave.CPUEvidence, error) {
	raw, err := q.Quote(ctx, reportData)
	if err != nil {
		return enclave.CPUEvidence{}, err
	}
	return enclave.CPUEvidence{Format: enclave.KindTDX, Raw: raw}, nil
}

// Quote returns a raw TDX quote (v4 or v5) whose report data is reportData.
// The kernel call itself cannot be interrupted: when ctx ends first, Quote
// returns ctx's error and the call finishes in the background, still
// holding the interface so the next request does not collide with it.
func (q *Quoter) Quote(ctx context.Context, reportData [64]byte) ([]byte, error) {
	raw, err := q.dev.Do(ctx, reportData)
	if err != nil {
		return nil, err
	}
	return checkQuote(raw, reportData)
}

// checkQuote makes sure the bytes are a TDX quote over the report data we
// asked for. Parsing is cheap next to the quote itself, and it stops a
// driver or provider mix-up (an SEV-SNP report, a stale quote) before it
// reaches a bundle.
func checkQuote(raw []byte, want [64]byte) ([]byte, error) {
	parsed, err := atdx.ParseQuote(raw)
	if err != nil {
		return nil, fmt.Errorf("checking TDX quote: %w", err)
	}
	if parsed.Body.ReportData != want {
		return nil, fmt.Errorf("checking TDX quote: %w", ErrReportDataMismatch)
	}
	return raw, nil
}

// Close releases the interface, after a request in flight has finished.
// Requests after Close fail with ErrClosed.
func (q *Quoter) Close() error { return q.dev.Close() }
