//go:build cgo && linux

package nvgpu

import (
	"errors"
	"fmt"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// realNVML adapts go-nvml to nvmlAPI. It refuses every call unless Init
// succeeded, because NVML aborts the process on calls after a failed Init.
type realNVML struct {
	lib nvml.Interface
	mu  sync.Mutex
	up  bool
}

var errNotInitialized = errors.New("NVML not initialized")

func newNVML() (nvmlAPI, error) { return &realNVML{lib: nvml.New()}, nil }

// nvmlErr turns a return code into an error; nil for SUCCESS.
func nvmlErr(r nvml.Return) error {
	if r == nvml.SUCCESS {
		return nil
	}
	return &NVMLError{Code: int(r), Text: r.Error()}
}

func (n *realNVML) Init() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.up {
		return nil
	}
	if err := nvmlErr(n.lib.Init()); err != nil {
		return err
	}
	n.up = true
	return nil
}

func (n *realNVML) Shutdown() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.up {
		return nil
	}
	n.up = false
	return nvmlErr(n.lib.Shutdown())
}

func (n *realNVML) ready() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.up {
		return errNotInitialized
	}
	return nil
}

// have checks that the loaded driver exports a symbol: calling one it
// lacks (CC arrived in driver 535) would crash in the cgo stub.
func (n *realNVML) have(symbol string) error {
	if err := n.ready(); err != nil {
		return err
	}
	if err := n.lib.Extensions().LookupSymbol(symbol); err != nil {
		return fmt.Errorf("%s: %w", symbol, ErrNotSupported)
	}
	return nil
}

func (n *realNVML) DriverVersion() (string, error) {
	if err := n.ready(); err != nil {
		return "", err
	}
	v, r := n.lib.SystemGetDriverVersion()
	return v, nvmlErr(r)
}

func (n *realNVML) CCState() (CCState, error) {
	if err := n.have("nvmlSystemGetConfComputeState"); err != nil {
		return CCState{}, err
	}
	s, r := n.lib.SystemGetConfComputeState()
	if err := nvmlErr(r); err != nil {
		return CCState{}, err
	}
	st := CCState{
		Enabled:  s.CcFeature == nvml.CC_SYSTEM_FEATURE_ENABLED,
		DevTools: s.DevToolsMode == nvml.CC_SYSTEM_DEVTOOLS_MODE_ON,
	}
	switch s.Environment {
	case nvml.CC_SYSTEM_ENVIRONMENT_PROD:
		st.Environment = EnvironmentProduction
	case nvml.CC_SYSTEM_ENVIRONMENT_SIM:
		st.Environment = EnvironmentSimulated
	default:
		st.Environment = EnvironmentUnavailable
	}
	if err := n.have("nvmlSystemGetConfComputeGpusReadyState"); err == nil {
		ready, r := n.lib.SystemGetConfComputeGpusReadyState()
		if r == nvml.SUCCESS {
			st.GPUsReady = ready == nvml.CC_ACCEPTING_CLIENT_REQUESTS_TRUE
		}
	}
	return st, nil
}

func (n *realNVML) DeviceCount() (int, error) {
	if err := n.ready(); err != nil {
		return 0, err
	}
	c, r := n.lib.DeviceGetCount()
	return c, nvmlErr(r)
}

func (n *realNVML) Device(i int) (nvmlDevice, error) {
	if err := n.ready(); err != nil {
		return nil, err
	}
	d, r := n.lib.DeviceGetHandleByIndex(i)
	if err := nvmlErr(r); err != nil {
		return nil, err
	}
	return realDevice{n: n, d: d}, nil
}

type realDevice struct {
	n *realNVML
	d nvml.Device
}

func (d realDevice) Name() (string, error) {
	if err := d.n.ready(); err != nil {
		return "", err
	}
	s, r := d.d.GetName()
	return s, nvmlErr(r)
}

func (d realDevice) UUID() (string, error) {
	if err := d.n.ready(); err != nil {
		return "", err
	}
	s, r := d.d.GetUUID()
	return s, nvmlErr(r)
}

func (d realDevice) Arch() (string, error) {
	if err := d.n.ready(); err != nil {
		return "", err
	}
	a, r := d.d.GetArchitecture()
	if err := nvmlErr(r); err != nil {
		return "", err
	}
	switch a {
	case nvml.DEVICE_ARCH_HOPPER:
		return "hopper", nil
	case nvml.DEVICE_ARCH_BLACKWELL:
		return "blackwell", nil
	}
	return fmt.Sprintf("arch-%d", a), nil
}

func (d realDevice) AttestationReport(nonce [32]byte) ([]byte, error) {
	if err := d.n.have("nvmlDeviceGetConfComputeGpuAttestationReport"); err != nil {
		return nil, err
	}
	// The struct is ~12 KiB; NVML fills it in place. The nonce goes in
	// first: NVML passes it to the GPU as the SPDM requester nonce.
	rep := &nvml.ConfComputeGpuAttestationReport{Nonce: nonce}
	if err := nvmlErr(d.d.GetConfComputeGpuAttestationReport(rep)); err != nil {
		return nil, err
	}
	if rep.AttestationReportSize == 0 || int(rep.AttestationReportSize) > len(rep.AttestationReport) {
		return nil, fmt.Errorf("%w: size %d", ErrMalformedReport, rep.AttestationReportSize)
	}
	return append([]byte(nil), rep.AttestationReport[:rep.AttestationReportSize]...), nil
}

func (d realDevice) AttestationCertChain() ([]byte, error) {
	if err := d.n.have("nvmlDeviceGetConfComputeGpuCertificate"); err != nil {
		return nil, err
	}
	c, r := d.d.GetConfComputeGpuCertificate()
	if err := nvmlErr(r); err != nil {
		return nil, err
	}
	// AttestationCertChain is the chain of the key that signs reports;
	// CertChain is the device identity chain, not used for reports.
	if c.AttestationCertChainSize == 0 || int(c.AttestationCertChainSize) > len(c.AttestationCertChain) {
		return nil, fmt.Errorf("%w: certificate chain size %d", ErrMalformedReport, c.AttestationCertChainSize)
	}
	return append([]byte(nil), c.AttestationCertChain[:c.AttestationCertChainSize]...), nil
}
