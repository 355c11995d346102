package nvgpu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/teegate/teegate/attest"
	"github.com/teegate/teegate/attest/nvidia"
	"github.com/teegate/teegate/enclave"
)

var (
	// ErrUnsupported: this binary was built without the NVML binding (it
	// needs cgo on Linux).
	ErrUnsupported = errors.New("NVIDIA GPU support not compiled in (needs cgo on linux)")
	// ErrNoDriver: libnvidia-ml could not be loaded (NVML
	// ERROR_LIBRARY_NOT_FOUND): no NVIDIA driver on this machine.
	ErrNoDriver = errors.New("NVIDIA driver (libnvidia-ml) not found")
	// ErrNotSupported: the driver or GPU does not support the call (NVML
	// ERROR_NOT_SUPPORTED, or a symbol older drivers lack).
	ErrNotSupported = errors.New("not supported by this NVIDIA driver or GPU")
	// ErrCCOff: the GPUs are not in confidential-computing mode.
	ErrCCOff = errors.New("GPU confidential computing is off")
	// ErrNoGPUs: CC is on but NVML lists no GPU.
	ErrNoGPUs = errors.New("no NVIDIA GPU found")
	// ErrMalformedReport: a GPU returned a report that does not parse, or a
	// size larger than its buffer.
	ErrMalformedReport = errors.New("malformed GPU attestation report")
	// ErrNonceMismatch: a GPU report does not carry the nonce asked for.
	ErrNonceMismatch = errors.New("GPU report carries another nonce")
	// ErrClosed: the GPUs were closed.
	ErrClosed = errors.New("NVML closed")
)

// NVMLError is an NVML return code other than success. It matches
// ErrNoDriver and ErrNotSupported with errors.Is by code.
type NVMLError struct {
	Code int
	// Text is NVML's own description of the code.
	Text string
}

// NVML return codes this package tells apart (nvml.h, nvmlReturn_t).
const (
	codeNotSupported    = 3
	codeLibraryNotFound = 12
)

func (e *NVMLError) Error() string { return fmt.Sprintf("NVML error %d (%s)", e.Code, e.Text) }

// Is makes the codes that callers act on comparable with the sentinels.
func (e *NVMLError) Is(target error) bool {
	switch target {
	case ErrNoDriver:
		return e.Code == codeLibraryNotFound
	case ErrNotSupported:
		return e.Code == codeNotSupported
	}
	return false
}

// CC environments (nvmlConfComputeSystemState_t.environment).
const (
	EnvironmentUnavailable = "unavailable"
	EnvironmentSimulated   = "sim"
	EnvironmentProduction  = "prod"
)

// CCState is the system-wide confidential-computing state NVML reports.
type CCState struct {
	// Enabled: the CC feature is on (nvmlConfComputeSystemState.ccFeature).
	Enabled bool
	// Environment is EnvironmentProduction, EnvironmentSimulated or
	// EnvironmentUnavailable.
	Environment string
	// DevTools: CC devtools mode, where the GPU runs in CC but lets
	// debugging tools read its memory. Production policies reject it.
	DevTools bool
	// GPUsReady: the GPUs accept work (set after attestation by the
	// administrator, nvidia-smi conf-compute -srs 1).
	GPUsReady bool
}

// Mode is the attest.GPUEvidence.CCMode value: "on", "off" or "devtools".
func (s CCState) Mode() string {
	switch {
	case !s.Enabled:
		return attest.CCModeOff
	case s.DevTools:
		return attest.CCModeDevTools
	}
	return attest.CCModeOn
}

// nvmlAPI is the seam over NVML. Init must be the first call; after a
// failed Init nothing else may be called.
type nvmlAPI interface {
	Init() error
	Shutdown() error
	DriverVersion() (string, error)
	CCState() (CCState, error)
	DeviceCount() (int, error)
	Device(index int) (nvmlDevice, error)
}

// nvmlDevice is one GPU behind the seam.
type nvmlDevice interface {
	Name() (string, error)
	UUID() (string, error)
	// Arch is the lowercase architecture ("hopper", "blackwell").
	Arch() (string, error)
	// AttestationReport returns the SPDM request || response over nonce.
	AttestationReport(nonce [32]byte) ([]byte, error)
	// AttestationCertChain returns the PEM chain, leaf first.
	AttestationCertChain() ([]byte, error)
}

// GPUs produces the evidence of all GPUs of the machine. Safe for
// concurrent use; NVML calls are serialized.
type GPUs struct {
	mu     sync.Mutex
	api    nvmlAPI
	state  CCState
	closed bool
}

var _ enclave.GPUSource = (*GPUs)(nil)

// Open loads NVML and checks that the GPUs are in CC mode. It fails with
// ErrUnsupported (no NVML binding), ErrNoDriver (no driver), ErrCCOff, or
// an NVMLError. Close releases NVML.
func Open(ctx context.Context) (*GPUs, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	api, err := newNVML()
	if err != nil {
		return nil, fmt.Errorf("opening NVML: %w", err)
	}
	return open(api)
}

func open(api nvmlAPI) (*GPUs, error) {
	if err := api.Init(); err != nil {
		// NVML aborts the process on any further call: return at once.
		return nil, fmt.Errorf("initializing NVML: %w", err)
	}
	state, err := api.CCState()
	if err != nil {
		api.Shutdown()
		return nil, fmt.Errorf("reading GPU CC state: %w", err)
	}
	if !state.Enabled {
		api.Shutdown()
		return nil, fmt.Errorf("reading GPU CC state: %w", ErrCCOff)
	}
	return &GPUs{api: api, state: state}, nil
}

// CCState returns the CC state read by the last Open or GPUEvidence.
func (g *GPUs) CCState() CCState {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state
}

// GPUEvidence returns, for every GPU in NVML index order, its attestation
// report over nonce, its certificate chain and the CC mode
// (CCState().Mode(): "on" or "devtools"). It re-reads the CC state first
// and fails with ErrCCOff when CC was turned off.
func (g *GPUs) GPUEvidence(ctx context.Context, nonce [32]byte) ([]attest.GPUEvidence, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, ErrClosed
	}
	state, err := g.api.CCState()
	if err != nil {
		return nil, fmt.Errorf("reading GPU CC state: %w", err)
	}
	g.state = state
	if !state.Enabled {
		return nil, fmt.Errorf("reading GPU CC state: %w", ErrCCOff)
	}
	n, err := g.api.DeviceCount()
	if err != nil {
		return nil, fmt.Errorf("counting GPUs: %w", err)
	}
	if n == 0 {
		return nil, fmt.Errorf("counting GPUs: %w", ErrNoGPUs)
	}
	out := make([]attest.GPUEvidence, 0, n)
	for i := range n {
		// Each report takes the GPU tens of milliseconds: stop between
		// GPUs when the caller gave up.
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ev, err := gpuEvidence(g.api, i, nonce, state.Mode())
		if err != nil {
			return nil, fmt.Errorf("GPU %d: %w", i, err)
		}
		out = append(out, ev)
	}
	return out, nil
}

// gpuEvidence collects GPU i's evidence. ccMode is the system-wide mode
// (NVML reports CC state per system, not per GPU) read just before, so each
// GPU's evidence states the mode it was attested in.
func gpuEvidence(api nvmlAPI, i int, nonce [32]byte, ccMode string) (attest.GPUEvidence, error) {
	d, err := api.Device(i)
	if err != nil {
		return attest.GPUEvidence{}, fmt.Errorf("getting device handle: %w", err)
	}
	arch, err := d.Arch()
	if err != nil {
		return attest.GPUEvidence{}, fmt.Errorf("reading architecture: %w", err)
	}
	rep, err := d.AttestationReport(nonce)
	if err != nil {
		return attest.GPUEvidence{}, fmt.Errorf("getting attestation report: %w", err)
	}
	if err := checkReport(rep, nonce); err != nil {
		return attest.GPUEvidence{}, err
	}
	chain, err := d.AttestationCertChain()
	if err != nil {
		return attest.GPUEvidence{}, fmt.Errorf("getting attestation certificate chain: %w", err)
	}
	return attest.GPUEvidence{Arch: arch, CCMode: ccMode, Report: rep, CertChain: chain}, nil
}

// checkReport parses the report and compares its requester nonce: a GPU
// that ignored the nonce (or a stale buffer) must not reach a bundle.
func checkReport(rep []byte, nonce [32]byte) error {
	r, err := nvidia.ParseReport(rep)
	if err != nil {
		return fmt.Errorf("checking attestation report: %w: %w", ErrMalformedReport, err)
	}
	got := r.Nonce()
	if !bytes.Equal(got[:], nonce[:]) {
		return fmt.Errorf("checking attestation report: %w", ErrNonceMismatch)
	}
	return nil
}

// Close shuts NVML down. Calls after Close fail with ErrClosed.
func (g *GPUs) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	if err := g.api.Shutdown(); err != nil {
		return fmt.Errorf("shutting NVML down: %w", err)
	}
	return nil
}

// ProbeGPU describes one GPU.
type ProbeGPU struct {
	Index int    `json:"index"`
	Name  string `json:"name"`
	UUID  string `json:"uuid"`
	Arch  string `json:"arch"`
}

// ProbeResult is what Probe found.
type ProbeResult struct {
	// Driver is the NVIDIA driver version.
	Driver string `json:"driver"`
	// CC is the system CC state; CCSupported is false when the driver or
	// GPUs do not implement CC (CC then reads as off).
	CC          CCState `json:"cc"`
	CCSupported bool    `json:"cc_supported"`
	// GPUs lists the GPUs NVML sees.
	GPUs []ProbeGPU `json:"gpus"`
}

// Probe loads NVML and reports the driver version, the CC state and the
// GPUs. It does not require CC to be on. Without a driver it fails with
// ErrNoDriver (or ErrUnsupported without the binding).
func Probe(ctx context.Context) (ProbeResult, error) {
	if err := ctx.Err(); err != nil {
		return ProbeResult{}, err
	}
	api, err := newNVML()
	if err != nil {
		return ProbeResult{}, fmt.Errorf("probing GPUs: %w", err)
	}
	return probe(ctx, api)
}

func probe(ctx context.Context, api nvmlAPI) (ProbeResult, error) {
	if err := api.Init(); err != nil {
		return ProbeResult{}, fmt.Errorf("probing GPUs: initializing NVML: %w", err)
	}
	defer api.Shutdown()
	var res ProbeResult
	var err error
	if res.Driver, err = api.DriverVersion(); err != nil {
		return res, fmt.Errorf("probing GPUs: reading driver version: %w", err)
	}
	res.CC, err = api.CCState()
	switch {
	case errors.Is(err, ErrNotSupported):
		res.CC = CCState{Environment: EnvironmentUnavailable}
	case err != nil:
		return res, fmt.Errorf("probing GPUs: reading CC state: %w", err)
	default:
		res.CCSupported = true
	}
	n, err := api.DeviceCount()
	if err != nil {
		return res, fmt.Errorf("probing GPUs: counting GPUs: %w", err)
	}
	res.GPUs = make([]ProbeGPU, 0, n)
	for i := range n {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		d, err := api.Device(i)
		if err != nil {
			return res, fmt.Errorf("probing GPU %d: %w", i, err)
		}
		pg := ProbeGPU{Index: i}
		// Names and UUIDs are informational: keep going without them.
		pg.Name, _ = d.Name()
		pg.UUID, _ = d.UUID()
		pg.Arch, _ = d.Arch()
		res.GPUs = append(res.GPUs, pg)
	}
	return res, nil
}

// WriteProbe runs Probe and writes a short human-readable report to w: the
// body of `teegate probe gpu`. On failure it writes what failed and
// returns the error.
func WriteProbe(ctx context.Context, w io.Writer) error {
	res, err := Probe(ctx)
	return writeProbe(w, res, err)
}

func writeProbe(w io.Writer, res ProbeResult, perr error) error {
	if perr != nil && res.Driver == "" {
		_, werr := fmt.Fprintf(w, "nvidia driver: not available (%v)\n", perr)
		return errors.Join(perr, werr)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "nvidia driver: %s\n", res.Driver)
	if res.CCSupported {
		fmt.Fprintf(&b, "cc mode:       %s (environment %s)\n", res.CC.Mode(), res.CC.Environment)
		fmt.Fprintf(&b, "devtools:      %s\n", onOff(res.CC.DevTools))
		fmt.Fprintf(&b, "gpus ready:    %s\n", yesNo(res.CC.GPUsReady))
	} else {
		fmt.Fprintf(&b, "cc mode:       not supported by this driver or GPU\n")
	}
	fmt.Fprintf(&b, "gpus:          %d\n", len(res.GPUs))
	for _, g := range res.GPUs {
		fmt.Fprintf(&b, "  gpu %d: %s, %s, %s\n", g.Index, orUnknown(g.Name), orUnknown(g.Arch), orUnknown(g.UUID))
	}
	if perr != nil {
		fmt.Fprintf(&b, "error: %v\n", perr)
	}
	_, werr := w.Write(b.Bytes())
	return errors.Join(perr, werr)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
