package snp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/client"

	"github.com/teegate/teegate/enclave"
)

// Names of the two kernel interfaces, as Reporter.Interface reports them.
const (
	InterfaceConfigfs = "configfs-tsm"
	InterfaceDevice   = "/dev/sev-guest"
)

// DefaultDevicePath is the SEV guest device.
const DefaultDevicePath = "/dev/sev-guest"

// ReportSize is the size of the report proper, before any certificate
// table (AMD 56860, Table 23).
const ReportSize = abi.ReportSize

var (
	// ErrNoDevice: neither configfs-tsm with the sev_guest provider nor the
	// SEV guest device is available (not an SEV-SNP guest).
	ErrNoDevice = errors.New("no SEV-SNP report interface")
	// ErrReportFailed: the kernel or the firmware refused the request.
	ErrReportFailed = errors.New("SEV-SNP report request failed")
	// ErrMalformedReport: the bytes returned are not an SEV-SNP report.
	ErrMalformedReport = errors.New("malformed SEV-SNP report")
	// ErrReportDataMismatch: the report does not carry the report data that
	// was asked for.
	ErrReportDataMismatch = errors.New("SEV-SNP report carries other report data")
	// ErrClosed: the Reporter was closed.
	ErrClosed = errors.New("SEV-SNP reporter closed")
)

// Options configure Open.
type Options struct {
	// DevicePath is the SEV guest device; empty means DefaultDevicePath.
	DevicePath string
	// DisableConfigfs skips configfs-tsm and goes straight to the device.
	DisableConfigfs bool
	// Retries is how often a busy interface (EBUSY, EAGAIN) is retried;
	// 0 means 3, negative means never.
	Retries int
}

// source is the seam between the Reporter and the kernel.
type source struct {
	name   string
	report func(reportData [64]byte) ([]byte, error)
	close  func() error
}

// Reporter produces SEV-SNP reports. Safe for concurrent use; requests are
// served one at a time.
type Reporter struct {
	src       source
	sem       chan struct{}
	retries   int
	closed    chan struct{}
	closeOnce sync.Once
}

var _ enclave.CPUSource = (*Reporter)(nil)

// Open finds the guest's report interface: configfs-tsm when its provider
// is sev_guest, otherwise the SEV guest device. It fails with ErrNoDevice
// outside an SEV-SNP guest.
func Open(ctx context.Context, opts Options) (*Reporter, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	src, err := openPlatform(opts)
	if err != nil {
		return nil, fmt.Errorf("opening SEV-SNP report interface: %w", err)
	}
	return newReporter(src, opts.Retries), nil
}

// FromQuoteProvider wraps a go-sev-guest QuoteProvider (configfs-tsm, the
// ioctl provider, or a fake from go-sev-guest's testing package). Its
// GetRawQuote returns the report followed by the certificate table.
func FromQuoteProvider(p client.QuoteProvider) *Reporter {
	return newReporter(source{name: InterfaceConfigfs, report: p.GetRawQuote}, 0)
}

// FromDevice wraps an opened go-sev-guest Device. It asks for an extended
// report (report plus certificate table) and falls back to a plain report
// when the host offers no certificates. Close closes the device.
func FromDevice(d client.Device) *Reporter {
	return newReporter(source{name: InterfaceDevice, report: deviceReport(d), close: d.Close}, 0)
}

func deviceReport(d client.Device) func([64]byte) ([]byte, error) {
	return func(rd [64]byte) ([]byte, error) {
		report, certs, err := client.GetRawExtendedReport(d, rd)
		if err != nil {
			// Hosts that never installed certificates may refuse the
			// extended request; the VCEK then has to come from AMD KDS.
			report, err = client.GetRawReport(d, rd)
			if err != nil {
				return nil, err
			}
			return report, nil
		}
		if len(certs) == 0 {
			return report, nil
		}
		out := make([]byte, 0, len(report)+len(certs))
		return append(append(out, report...), certs...), nil
	}
}

func newReporter(src source, retries int) *Reporter {
	switch {
	case retries == 0:
		retries = 3
	case retries < 0:
		retries = 0
	}
	return &Reporter{src: src, sem: make(chan struct{}, 1), retries: retries, closed: make(chan struct{})}
}

// Kind is "sev-snp".
func (r *Reporter) Kind() string { return enclave.KindSEVSNP }

// Interface names the kernel interface in use, for the worker's log.
func (r *Reporter) Interface() string { return r.src.name }

// CPUEvidence returns an SEV-SNP report (with its certificate table when
// the host provides one) over reportData.
func (r *Reporter) CPUEvidence(ctx context.Context, reportData [64]byte) (enclave.CPUEvidence, error) {
	raw, err := r.Report(ctx, reportData)
	if err != nil {
		return enclave.CPUEvidence{}, err
	}
	return enclave.CPUEvidence{Format: enclave.KindSEVSNP, Raw: raw}, nil
}

// Report returns the raw report whose REPORT_DATA is reportData, followed
// by the certificate table when there is one. As with the TDX quoter, a
// request abandoned through ctx finishes in the background while holding
// the interface.
func (r *Reporter) Report(ctx context.Context, reportData [64]byte) ([]byte, error) {
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the SEV-SNP report interface: %w", ctx.Err())
	case <-r.closed:
		return nil, ErrClosed
	}
	select {
	case <-r.closed:
		<-r.sem
		return nil, ErrClosed
	default:
	}
	type result struct {
		raw []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer func() { <-r.sem }()
		raw, err := r.reportRetrying(ctx, reportData)
		done <- result{raw, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		return nil, fmt.Errorf("requesting SEV-SNP report: %w", ctx.Err())
	}
	if res.err != nil {
		return nil, res.err
	}
	return checkReport(res.raw, reportData)
}

func (r *Reporter) reportRetrying(ctx context.Context, rd [64]byte) ([]byte, error) {
	wait := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		raw, err := r.src.report(rd)
		if err == nil {
			return raw, nil
		}
		if attempt >= r.retries || !busy(err) {
			return nil, fmt.Errorf("requesting SEV-SNP report via %s: %w: %w", r.src.name, ErrReportFailed, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("requesting SEV-SNP report via %s: %w", r.src.name, ctx.Err())
		case <-t.C:
		}
		wait *= 2
	}
}

func busy(err error) bool {
	return errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.EAGAIN)
}

// checkReport makes sure the first ReportSize bytes are an SEV-SNP report
// over the report data we asked for; a certificate table may follow.
func checkReport(raw []byte, want [64]byte) ([]byte, error) {
	if len(raw) < ReportSize {
		return nil, fmt.Errorf("checking SEV-SNP report: %w: %d bytes, want at least %d", ErrMalformedReport, len(raw), ReportSize)
	}
	if err := abi.ValidateReportFormat(raw[:ReportSize]); err != nil {
		return nil, fmt.Errorf("checking SEV-SNP report: %w: %w", ErrMalformedReport, err)
	}
	rep, err := abi.ReportToProto(raw[:ReportSize])
	if err != nil {
		return nil, fmt.Errorf("checking SEV-SNP report: %w: %w", ErrMalformedReport, err)
	}
	if string(rep.GetReportData()) != string(want[:]) {
		return nil, fmt.Errorf("checking SEV-SNP report: %w", ErrReportDataMismatch)
	}
	return raw, nil
}

// Close releases the interface. Requests after Close fail with ErrClosed.
func (r *Reporter) Close() error {
	var err error
	r.closeOnce.Do(func() {
		close(r.closed)
		// Wait for a request in flight; the semaphore stays taken.
		r.sem <- struct{}{}
		if r.src.close != nil {
			if cerr := r.src.close(); cerr != nil {
				err = fmt.Errorf("closing SEV-SNP report interface: %w", cerr)
			}
		}
	})
	return err
}
