package nvidia

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
)

// OpaqueType is the type of one field of NVIDIA's opaque data. SPDM 1.1
// (DMTF DSP0274 1.1, MEASUREMENTS response) leaves OpaqueData to the vendor;
// NVIDIA fills it with a list of little-endian {type uint16, size uint16,
// value [size]byte} fields. The numbering is NVIDIA's (the names follow the
// OPAQUE_FIELD_ID_* names of NVIDIA's verifiers).
type OpaqueType uint16

// NVIDIA opaque data field types.
const (
	OpaqueCertIssuerName      OpaqueType = 1
	OpaqueCertAuthorityKeyID  OpaqueType = 2
	OpaqueDriverVersion       OpaqueType = 3
	OpaqueGPUInfo             OpaqueType = 4
	OpaqueSKU                 OpaqueType = 5
	OpaqueVBIOSVersion        OpaqueType = 6
	OpaqueManufacturerID      OpaqueType = 7
	OpaqueTamperDetection     OpaqueType = 8
	OpaqueSMC                 OpaqueType = 9
	OpaqueVPR                 OpaqueType = 10
	OpaqueNVDEC0Status        OpaqueType = 11
	OpaqueMeasurementCount    OpaqueType = 12 // MSRSCNT: uint32 LE per block
	OpaqueCPRInfo             OpaqueType = 13
	OpaqueBoardID             OpaqueType = 14
	OpaqueChipSKU             OpaqueType = 15
	OpaqueChipSKUMod          OpaqueType = 16
	OpaqueProject             OpaqueType = 17
	OpaqueProjectSKU          OpaqueType = 18
	OpaqueProjectSKUMod       OpaqueType = 19
	OpaqueFWID                OpaqueType = 20
	OpaqueProtectedPCIeStatus OpaqueType = 21
	OpaqueSwitchPDI           OpaqueType = 22 // GPU: PDIs of its switches; NVSwitch: its own PDI
	OpaqueFloorsweptPorts     OpaqueType = 23
	OpaquePositionID          OpaqueType = 24
	OpaqueLockSwitchStatus    OpaqueType = 25
	OpaqueSwitchGPUPDIs       OpaqueType = 26 // NVSwitch only
	OpaqueGPULinkConn         OpaqueType = 32
	OpaqueSysEnableStatus     OpaqueType = 33
	OpaqueOpaqueDataVersion   OpaqueType = 34
	OpaqueChipInfo            OpaqueType = 35
	OpaqueFeatureFlag         OpaqueType = 36
	OpaqueInvalid             OpaqueType = 255
)

var opaqueNames = map[OpaqueType]string{
	OpaqueCertIssuerName:      "CERT_ISSUER_NAME",
	OpaqueCertAuthorityKeyID:  "CERT_AUTHORITY_KEY_IDENTIFIER",
	OpaqueDriverVersion:       "DRIVER_VERSION",
	OpaqueGPUInfo:             "GPU_INFO",
	OpaqueSKU:                 "SKU",
	OpaqueVBIOSVersion:        "VBIOS_VERSION",
	OpaqueManufacturerID:      "MANUFACTURER_ID",
	OpaqueTamperDetection:     "TAMPER_DETECTION",
	OpaqueSMC:                 "SMC",
	OpaqueVPR:                 "VPR",
	OpaqueNVDEC0Status:        "NVDEC0_STATUS",
	OpaqueMeasurementCount:    "MSRSCNT",
	OpaqueCPRInfo:             "CPRINFO",
	OpaqueBoardID:             "BOARD_ID",
	OpaqueChipSKU:             "CHIP_SKU",
	OpaqueChipSKUMod:          "CHIP_SKU_MOD",
	OpaqueProject:             "PROJECT",
	OpaqueProjectSKU:          "PROJECT_SKU",
	OpaqueProjectSKUMod:       "PROJECT_SKU_MOD",
	OpaqueFWID:                "FWID",
	OpaqueProtectedPCIeStatus: "PROTECTED_PCIE_STATUS",
	OpaqueSwitchPDI:           "SWITCH_PDI",
	OpaqueFloorsweptPorts:     "FLOORSWEPT_PORTS",
	OpaquePositionID:          "POSITION_ID",
	OpaqueLockSwitchStatus:    "LOCK_SWITCH_STATUS",
	OpaqueSwitchGPUPDIs:       "SWITCH_GPU_PDIS",
	OpaqueGPULinkConn:         "GPU_LINK_CONN",
	OpaqueSysEnableStatus:     "SYS_ENABLE_STATUS",
	OpaqueOpaqueDataVersion:   "OPAQUE_DATA_VERSION",
	OpaqueChipInfo:            "CHIP_INFO",
	OpaqueFeatureFlag:         "FEATURE_FLAG",
	OpaqueInvalid:             "INVALID",
}

// String returns NVIDIA's name for the type without its OPAQUE_FIELD_ID_
// prefix, or the number for types this package does not know.
func (t OpaqueType) String() string {
	if n, ok := opaqueNames[t]; ok {
		return n
	}
	return fmt.Sprintf("OPAQUE_TYPE_%d", uint16(t))
}

// NVDEC0 status values of OpaqueNVDEC0Status. When NVDEC0 is disabled NVIDIA
// does not compare the measurement at RIM index 35 (block 36).
const (
	NVDECEnabled  = 0xAA
	NVDECDisabled = 0x55
)

// OpaqueField is one field of the report's opaque data. Value aliases the
// report's bytes.
type OpaqueField struct {
	Type  OpaqueType
	Value []byte
}

// interpretedOpaque lists the fields whose value this package reads; a
// report carrying one of them twice is rejected, so no two parsers can
// disagree on which copy counts.
var interpretedOpaque = map[OpaqueType]bool{
	OpaqueDriverVersion:    true,
	OpaqueVBIOSVersion:     true,
	OpaqueFWID:             true,
	OpaqueNVDEC0Status:     true,
	OpaqueMeasurementCount: true,
	OpaqueChipInfo:         true,
	OpaqueProject:          true,
	OpaqueProjectSKU:       true,
	OpaqueChipSKU:          true,
}

// parseOpaque splits NVIDIA's opaque data into its fields.
func parseOpaque(b []byte) ([]OpaqueField, error) {
	var fields []OpaqueField
	seen := make(map[OpaqueType]bool, 16)
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, fmt.Errorf("%w: truncated opaque field header", ErrReportFormat)
		}
		t := OpaqueType(binary.LittleEndian.Uint16(b[0:2]))
		n := int(binary.LittleEndian.Uint16(b[2:4]))
		if len(b)-4 < n {
			return nil, fmt.Errorf("%w: opaque field %s overruns the opaque data", ErrReportFormat, t)
		}
		if interpretedOpaque[t] {
			if seen[t] {
				return nil, fmt.Errorf("%w: duplicate opaque field %s", ErrReportFormat, t)
			}
			seen[t] = true
		}
		if t == OpaqueMeasurementCount && n%4 != 0 {
			return nil, fmt.Errorf("%w: opaque MSRSCNT size %d is not a multiple of 4", ErrReportFormat, n)
		}
		fields = append(fields, OpaqueField{Type: t, Value: b[4 : 4+n : 4+n]})
		b = b[4+n:]
	}
	return fields, nil
}

// cString returns b up to its first NUL byte: NVIDIA pads version strings
// with NULs.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	// Versions end up in claims and logs: keep them printable ASCII.
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, string(b))
}

// FormatVBIOSVersion renders an opaque VBIOS_VERSION value the way NVIDIA's
// tools print it. GPUs report 8 bytes: the first four are a little-endian
// uint32 printed as four hex byte pairs, the fifth is the OEM byte (so
// 00 9f 00 96 01 00 00 00 is "96.00.9F.00.01"). NVSwitches report the
// version as text ("96.10.55.00.01"), which is returned as is.
func FormatVBIOSVersion(v []byte) string {
	if len(v) != 8 {
		return strings.TrimSpace(cString(v))
	}
	return fmt.Sprintf("%02X.%02X.%02X.%02X.%02X", v[3], v[2], v[1], v[0], v[4])
}
