package snp

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/client"

	"github.com/teegate/teegate/enclave"
	"github.com/teegate/teegate/enclave/internal/devcall"
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

// Options configure Open. The fields stay in step with devcall.Options,
// which Open converts them to.
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
	iface string
	dev   *devcall.Caller
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
func FromQuoteProvider(p client.QuoteProvider) *Reporter { return newReporter(providerSource(p), 0) }

func providerSource(p client.QuoteProvider) source {
	return source{name: InterfaceConfigfs, report: p.GetRawQuote}
}

// FromDevice wraps an opened go-sev-guest Device. It asks for an extended
// report (report plus certificate table) and falls back to a plain report
// when the host offers no certificates. Close closes the device.
func FromDevice(d client.Device) *Reporter {
	return newReporter(deviceSource(d), 0)
}

func deviceSource(d client.Device) source {
	return source{name: InterfaceDevice, report: deviceReport(d), close: d.Close}
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
	return &Reporter{iface: src.name, dev: devcall.New(devcall.Config{
		What:      "SEV-SNP report",
		Interface: src.name,
		Call:      src.report,
		Close:     src.close,
		Retries:   retries,
		ErrFailed: ErrReportFailed,
		ErrClosed: ErrClosed,
	})}
}

// Kind is "sev-snp".
func (r *Reporter) Kind() string { return enclave.KindSEVSNP }

// Interface names the kernel interface in use, for the worker's log.
func (r *Reporter) Interface() string { return r.iface }

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
	raw, err := r.dev.Do(ctx, reportData)
	if err != nil {
		return nil, err
	}
	return checkReport(raw, reportData)
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

// Close releases the interface, after a request in flight has finished.
// Requests after Close fail with ErrClosed.
func (r *Reporter) Close() error { return r.dev.Close() }
