package sgx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	asgx "github.com/teegate/teegate/attest/sgx"
	"github.com/teegate/teegate/enclave"
)

var (
	// ErrUnsupported: this binary was built without the EGo binding (build
	// tag "ego" and cgo).
	ErrUnsupported = errors.New("SGX support not compiled in (build with ego-go and -tags ego)")
	// ErrNotInEnclave: the process is not running inside an SGX enclave
	// (EGo answers OE_UNSUPPORTED, or hands out an all-zero seal key).
	ErrNotInEnclave = errors.New("not running inside an SGX enclave")
	// ErrReportFailed: the enclave runtime could not produce a remote
	// report (simulation mode, no quote provider, PCCS unreachable).
	ErrReportFailed = errors.New("SGX remote report failed")
	// ErrMalformedReport: the runtime returned bytes that are not an Open
	// Enclave remote report wrapping an SGX quote.
	ErrMalformedReport = errors.New("malformed SGX remote report")
	// ErrReportDataMismatch: the quote does not carry the report data that
	// was asked for.
	ErrReportDataMismatch = errors.New("SGX quote carries other report data")
)

// oeUnsupported is the error text EGo returns when no enclave runtime
// answers its calls (edgelesssys/ego enclave/ert.go, oeError).
const oeUnsupported = "OE_UNSUPPORTED"

// platform is the seam between the Reporter and the EGo runtime.
type platform interface {
	// selfReport gets a local report of this enclave; it only succeeds
	// inside an enclave.
	selfReport() error
	// productSealKey returns the product seal key.
	productSealKey() ([]byte, error)
	// remoteReport returns an Open Enclave remote report over reportData.
	remoteReport(reportData []byte) ([]byte, error)
}

// Reporter produces SGX quotes from inside an EGo enclave.
type Reporter struct {
	p platform
}

var _ enclave.CPUSource = (*Reporter)(nil)

// Open checks that the process runs inside an SGX enclave and returns a
// Reporter. Without the EGo binding it fails with ErrUnsupported; outside
// an enclave with ErrNotInEnclave.
func Open(ctx context.Context) (*Reporter, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := newPlatform()
	if err != nil {
		return nil, fmt.Errorf("opening SGX enclave runtime: %w", err)
	}
	return open(p)
}

func open(p platform) (*Reporter, error) {
	if err := checkEnclave(p); err != nil {
		return nil, fmt.Errorf("opening SGX enclave runtime: %w", err)
	}
	return &Reporter{p: p}, nil
}

// InEnclave reports whether this process runs inside an SGX enclave under
// EGo. It is always false without the EGo binding.
func InEnclave() bool {
	p, err := newPlatform()
	if err != nil {
		return false
	}
	return checkEnclave(p) == nil
}

// checkEnclave proves the enclave is real: EGo's calls succeed quietly
// outside one for seal keys, so both a local report and a non-zero seal key
// are required.
func checkEnclave(p platform) error {
	if err := p.selfReport(); err != nil {
		return fmt.Errorf("getting self report: %w", runtimeErr(err, ErrNotInEnclave))
	}
	key, err := p.productSealKey()
	if err != nil {
		return fmt.Errorf("getting seal key: %w", runtimeErr(err, ErrNotInEnclave))
	}
	if len(key) == 0 || bytes.Count(key, []byte{0}) == len(key) {
		return fmt.Errorf("getting seal key: all-zero key: %w", ErrNotInEnclave)
	}
	return nil
}

// runtimeErr maps EGo's OE_UNSUPPORTED to ErrNotInEnclave and anything
// else to other.
func runtimeErr(err, other error) error {
	if strings.Contains(err.Error(), oeUnsupported) {
		return fmt.Errorf("%w: %w", ErrNotInEnclave, err)
	}
	return fmt.Errorf("%w: %w", other, err)
}

// Kind is "sgx".
func (r *Reporter) Kind() string { return enclave.KindSGX }

// CPUEvidence returns the SGX ECDSA quote (version 3) over reportData.
func (r *Reporter) CPUEvidence(ctx context.Context, reportData [64]byte) (enclave.CPUEvidence, error) {
	rep, err := r.RemoteReport(ctx, reportData)
	if err != nil {
		return enclave.CPUEvidence{}, err
	}
	q, err := asgx.ParseOERemoteReport(rep)
	if err != nil {
		// RemoteReport parsed it already.
		return enclave.CPUEvidence{}, fmt.Errorf("parsing SGX remote report: %w: %w", ErrMalformedReport, err)
	}
	return enclave.CPUEvidence{Format: enclave.KindSGX, Raw: bytes.Clone(q.RawQuote)}, nil
}

// RemoteReport returns the Open Enclave remote report (a 16-byte header,
// then the SGX quote) over reportData, as EGo's GetRemoteReport gives it.
// The EGo call cannot be interrupted; ctx is checked before it.
func (r *Reporter) RemoteReport(ctx context.Context, reportData [64]byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("requesting SGX remote report: %w", err)
	}
	raw, err := r.p.remoteReport(reportData[:])
	if err != nil {
		return nil, fmt.Errorf("requesting SGX remote report: %w", runtimeErr(err, ErrReportFailed))
	}
	return checkReport(raw, reportData)
}

func checkReport(raw []byte, want [64]byte) ([]byte, error) {
	rep, err := asgx.ParseOERemoteReport(raw)
	if err != nil {
		return nil, fmt.Errorf("checking SGX remote report: %w: %w", ErrMalformedReport, err)
	}
	if rep.Quote.Report.ReportData != want {
		return nil, fmt.Errorf("checking SGX remote report: %w", ErrReportDataMismatch)
	}
	return raw, nil
}
