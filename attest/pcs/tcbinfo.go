package pcs

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// TCB statuses as Intel names them in TCB info and QE identity levels
// ("Intel PCS API", TCB info v3 / enclave identity v2), plus the two relaunch
// verdicts the TDX 1.5 evaluation can add.
const (
	StatusUpToDate                          = "UpToDate"
	StatusSWHardeningNeeded                 = "SWHardeningNeeded"
	StatusConfigurationNeeded               = "ConfigurationNeeded"
	StatusConfigurationAndSWHardeningNeeded = "ConfigurationAndSWHardeningNeeded"
	StatusOutOfDate                         = "OutOfDate"
	StatusOutOfDateConfigurationNeeded      = "OutOfDateConfigurationNeeded"
	StatusRevoked                           = "Revoked"
	StatusTDRelaunchAdvised                 = "TDRelaunchAdvised"
	StatusTDRelaunchAdvisedConfigNeeded     = "TDRelaunchAdvisedConfigurationNeeded"
)

var platformStatuses = map[string]bool{
	StatusUpToDate: true, StatusSWHardeningNeeded: true, StatusConfigurationNeeded: true,
	StatusConfigurationAndSWHardeningNeeded: true, StatusOutOfDate: true,
	StatusOutOfDateConfigurationNeeded: true, StatusRevoked: true,
}

var identityStatuses = map[string]bool{StatusUpToDate: true, StatusOutOfDate: true, StatusRevoked: true}

// TCB info identifiers (TCB info v3 "id").
const (
	TCBInfoSGX = "SGX"
	TCBInfoTDX = "TDX"
)

// TCBInfo is Intel's TCB info for one FMSPC: the platform TCB levels and,
// for TDX, the TDX module identities.
type TCBInfo struct {
	// ID is "SGX" or "TDX" (version 3); empty for version 2 (SGX only).
	ID                      string
	Version                 int
	IssueDate               time.Time
	NextUpdate              time.Time
	FMSPC                   [6]byte
	PCEID                   [2]byte
	TCBType                 int
	TCBEvaluationDataNumber int
	// TDXModule is the default TDX module identity (TDX, v3).
	TDXModule *TDXModule
	// TDXModuleIdentities lists module identities per major version (TDX_01,
	// TDX_03...), each with its own levels.
	TDXModuleIdentities []TDXModuleIdentity
	// TCBLevels in the order Intel serves them: newest first.
	TCBLevels []TCBLevel
}

// TDXModule is the signer and attributes expected of the TDX module.
type TDXModule struct {
	MRSIGNER       [48]byte
	Attributes     [8]byte
	AttributesMask [8]byte
}

// TDXModuleIdentity is a TDX module identity with its ISVSVN levels.
type TDXModuleIdentity struct {
	ID string
	TDXModule
	TCBLevels []IdentityLevel
}

// TCBLevel is one platform TCB level.
type TCBLevel struct {
	SGXComponents [16]uint8
	PCESVN        uint16
	// TDXComponents are the tdxtcbcomponents SVNs (TDX TCB info only).
	TDXComponents [16]uint8
	TCBDate       time.Time
	Status        string
	AdvisoryIDs   []string
}

// IdentityLevel is one ISVSVN level of a QE or TDX module identity.
type IdentityLevel struct {
	ISVSVN      uint16
	TCBDate     time.Time
	Status      string
	AdvisoryIDs []string
}

// SignedTCBInfo is a TCB info with the exact bytes Intel signed.
type SignedTCBInfo struct {
	TCBInfo
	// Raw is the signed JSON object, byte for byte as served.
	Raw []byte
	// Signature is the raw r||s ECDSA P-256 signature over Raw.
	Signature []byte
}

type jsonIdentityLevel struct {
	TCB struct {
		ISVSVN *int `json:"isvsvn"`
	} `json:"tcb"`
	TCBDate     string   `json:"tcbDate"`
	TCBStatus   string   `json:"tcbStatus"`
	AdvisoryIDs []string `json:"advisoryIDs"`
}

type jsonModule struct {
	ID             string              `json:"id"`
	MRSIGNER       string              `json:"mrsigner"`
	Attributes     string              `json:"attributes"`
	AttributesMask string              `json:"attributesMask"`
	TCBLevels      []jsonIdentityLevel `json:"tcbLevels"`
}

type jsonTCBInfo struct {
	ID                      string       `json:"id"`
	Version                 int          `json:"version"`
	IssueDate               string       `json:"issueDate"`
	NextUpdate              string       `json:"nextUpdate"`
	FMSPC                   string       `json:"fmspc"`
	PCEID                   string       `json:"pceId"`
	TCBType                 int          `json:"tcbType"`
	TCBEvaluationDataNumber int          `json:"tcbEvaluationDataNumber"`
	TDXModule               *jsonModule  `json:"tdxModule"`
	TDXModuleIdentities     []jsonModule `json:"tdxModuleIdentities"`
	TCBLevels               []struct {
		TCB         map[string]json.RawMessage `json:"tcb"`
		TCBDate     string                     `json:"tcbDate"`
		TCBStatus   string                     `json:"tcbStatus"`
		AdvisoryIDs []string                   `json:"advisoryIDs"`
	} `json:"tcbLevels"`
}

// ParseTCBInfo parses a PCS TCB info response body:
// {"tcbInfo":{...},"signature":"<hex r||s>"}.
func ParseTCBInfo(body []byte) (*SignedTCBInfo, error) {
	var env struct {
		TCBInfo   json.RawMessage `json:"tcbInfo"`
		Signature string          `json:"signature"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("parsing TCB info response: %v: %w", err, ErrCollateralFormat)
	}
	sig, err := hex.DecodeString(env.Signature)
	if err != nil || len(env.TCBInfo) == 0 {
		return nil, fmt.Errorf("parsing TCB info response: missing tcbInfo or signature: %w", ErrCollateralFormat)
	}
	return NewSignedTCBInfo(env.TCBInfo, sig)
}

// NewSignedTCBInfo parses the signed TCB info object raw (the value of
// "tcbInfo") with its separately stored signature.
func NewSignedTCBInfo(raw, sig []byte) (*SignedTCBInfo, error) {
	var j jsonTCBInfo
	if err := json.Unmarshal(raw, &j); err != nil {
		return nil, fmt.Errorf("parsing TCB info: %v: %w", err, ErrCollateralFormat)
	}
	if len(sig) != 64 {
		return nil, fmt.Errorf("parsing TCB info: signature is %d bytes: %w", len(sig), ErrCollateralFormat)
	}
	t, err := convertTCBInfo(&j)
	if err != nil {
		return nil, fmt.Errorf("parsing TCB info: %w", err)
	}
	return &SignedTCBInfo{TCBInfo: *t, Raw: bytes.Clone(raw), Signature: bytes.Clone(sig)}, nil
}

func convertTCBInfo(j *jsonTCBInfo) (*TCBInfo, error) {
	t := &TCBInfo{ID: j.ID, Version: j.Version, TCBType: j.TCBType, TCBEvaluationDataNumber: j.TCBEvaluationDataNumber}
	switch {
	case j.Version == 2 && j.ID == "":
	case j.Version == 3 && (j.ID == TCBInfoSGX || j.ID == TCBInfoTDX):
	default:
		return nil, fmt.Errorf("id %q version %d: %w", j.ID, j.Version, ErrCollateralFormat)
	}
	var err error
	if t.IssueDate, err = parseTime(j.IssueDate); err != nil {
		return nil, err
	}
	if t.NextUpdate, err = parseTime(j.NextUpdate); err != nil {
		return nil, err
	}
	if err := decodeHexInto(t.FMSPC[:], j.FMSPC); err != nil {
		return nil, err
	}
	if err := decodeHexInto(t.PCEID[:], j.PCEID); err != nil {
		return nil, err
	}
	isTDX := t.ID == TCBInfoTDX
	if j.TDXModule != nil {
		m, err := convertModule(j.TDXModule)
		if err != nil {
			return nil, err
		}
		t.TDXModule = &m.TDXModule
	}
	for i := range j.TDXModuleIdentities {
		m, err := convertModule(&j.TDXModuleIdentities[i])
		if err != nil {
			return nil, err
		}
		t.TDXModuleIdentities = append(t.TDXModuleIdentities, *m)
	}
	if len(j.TCBLevels) == 0 {
		return nil, fmt.Errorf("no TCB levels: %w", ErrCollateralFormat)
	}
	for _, jl := range j.TCBLevels {
		var l TCBLevel
		if !platformStatuses[jl.TCBStatus] {
			return nil, fmt.Errorf("TCB status %q: %w", jl.TCBStatus, ErrCollateralFormat)
		}
		l.Status = jl.TCBStatus
		l.AdvisoryIDs = jl.AdvisoryIDs
		if l.TCBDate, err = parseTime(jl.TCBDate); err != nil {
			return nil, err
		}
		if err := convertLevelTCB(jl.TCB, t.Version, isTDX, &l); err != nil {
			return nil, err
		}
		t.TCBLevels = append(t.TCBLevels, l)
	}
	return t, nil
}

func convertLevelTCB(m map[string]json.RawMessage, version int, isTDX bool, l *TCBLevel) error {
	pce, ok := m["pcesvn"]
	if !ok {
		return fmt.Errorf("TCB level without pcesvn: %w", ErrCollateralFormat)
	}
	v, err := svnValue(pce, 65535)
	if err != nil {
		return err
	}
	l.PCESVN = uint16(v)
	if version == 2 {
		for i := range 16 {
			raw, ok := m[fmt.Sprintf("sgxtcbcomp%02dsvn", i+1)]
			if !ok {
				return fmt.Errorf("TCB level without sgxtcbcomp%02dsvn: %w", i+1, ErrCollateralFormat)
			}
			v, err := svnValue(raw, 255)
			if err != nil {
				return err
			}
			l.SGXComponents[i] = uint8(v)
		}
		return nil
	}
	if err := components(m["sgxtcbcomponents"], &l.SGXComponents); err != nil {
		return err
	}
	if isTDX {
		return components(m["tdxtcbcomponents"], &l.TDXComponents)
	}
	return nil
}

func components(raw json.RawMessage, dst *[16]uint8) error {
	var comps []struct {
		SVN *int `json:"svn"`
	}
	if err := json.Unmarshal(raw, &comps); err != nil || len(comps) != 16 {
		return fmt.Errorf("TCB components: want 16: %w", ErrCollateralFormat)
	}
	for i, c := range comps {
		if c.SVN == nil || *c.SVN < 0 || *c.SVN > 255 {
			return fmt.Errorf("TCB component %d: %w", i, ErrCollateralFormat)
		}
		dst[i] = uint8(*c.SVN)
	}
	return nil
}

func svnValue(raw json.RawMessage, max int) (int, error) {
	v, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || v < 0 || v > max {
		return 0, fmt.Errorf("SVN %q: %w", raw, ErrCollateralFormat)
	}
	return v, nil
}

func convertModule(j *jsonModule) (*TDXModuleIdentity, error) {
	m := &TDXModuleIdentity{ID: j.ID}
	if err := decodeHexInto(m.MRSIGNER[:], j.MRSIGNER); err != nil {
		return nil, err
	}
	if err := decodeHexInto(m.Attributes[:], j.Attributes); err != nil {
		return nil, err
	}
	if err := decodeHexInto(m.AttributesMask[:], j.AttributesMask); err != nil {
		return nil, err
	}
	levels, err := convertIdentityLevels(j.TCBLevels)
	if err != nil {
		return nil, err
	}
	m.TCBLevels = levels
	return m, nil
}

func convertIdentityLevels(js []jsonIdentityLevel) ([]IdentityLevel, error) {
	out := make([]IdentityLevel, 0, len(js))
	for _, jl := range js {
		if jl.TCB.ISVSVN == nil || *jl.TCB.ISVSVN < 0 || *jl.TCB.ISVSVN > 65535 {
			return nil, fmt.Errorf("identity level without isvsvn: %w", ErrCollateralFormat)
		}
		if !identityStatuses[jl.TCBStatus] {
			return nil, fmt.Errorf("identity status %q: %w", jl.TCBStatus, ErrCollateralFormat)
		}
		d, err := parseTime(jl.TCBDate)
		if err != nil {
			return nil, err
		}
		out = append(out, IdentityLevel{ISVSVN: uint16(*jl.TCB.ISVSVN), TCBDate: d, Status: jl.TCBStatus, AdvisoryIDs: jl.AdvisoryIDs})
	}
	return out, nil
}

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("date %q: %w", s, ErrCollateralFormat)
	}
	return t, nil
}

// decodeHexInto decodes hex (either case) filling dst exactly.
func decodeHexInto(dst []byte, s string) error {
	b, err := decodeHexFixed(s, len(dst))
	if err != nil {
		return err
	}
	copy(dst, b)
	return nil
}

func decodeHexFixed(s string, n int) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != n {
		return nil, fmt.Errorf("hex field %q: want %d bytes: %w", s, n, ErrCollateralFormat)
	}
	return b, nil
}
