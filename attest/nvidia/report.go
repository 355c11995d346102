package nvidia

import (
	"encoding/binary"
	"fmt"
)

// Layout constants of the report: DMTF DSP0274 (SPDM) 1.1.x, section
// "GET_MEASUREMENTS request and MEASUREMENTS response messages".
const (
	// SPDMVersion11 is the only SPDM version accepted: 1.2 and later sign a
	// prefixed transcript hash and 1.3 adds fields to the response.
	SPDMVersion11 = 0x11
	// RequestLength is the size of a GET_MEASUREMENTS request that asks for
	// a signature: SPDMVersion, RequestResponseCode, Param1, Param2,
	// Nonce[32], SlotIDParam.
	RequestLength = 37
	// NonceSize is the size of the requester and responder nonces.
	NonceSize = 32
	// SignatureSize is the size of a raw ECDSA P-384 signature r||s.
	SignatureSize = 96

	codeGetMeasurements = 0xE0
	codeMeasurements    = 0x60
	// Param1 bit 0 of GET_MEASUREMENTS: signature requested.
	attrSignatureRequested = 0x01
	// responseFixedLength counts the response's fixed fields: SPDMVersion,
	// RequestResponseCode, Param1, Param2, NumberOfBlocks,
	// MeasurementRecordLength[3], Nonce[32], OpaqueLength[2].
	responseFixedLength = 4 + 1 + 3 + NonceSize + 2
	// maxOpaqueLength is SPDM 1.1's bound on OpaqueLength.
	maxOpaqueLength = 1024
	// Measurement block header: Index, MeasurementSpecification,
	// MeasurementSize[2]; DMTF measurement header: ValueType, ValueSize[2].
	blockHeaderLength     = 4
	dmtfHeaderLength      = 3
	measurementSpecDMTF   = 0x01
	maxReportLength       = RequestLength + responseFixedLength + 0xFFFFFF + maxOpaqueLength + SignatureSize
	minMeasurementBlockID = 1
	maxMeasurementBlockID = 0xFE
)

// Request is the GET_MEASUREMENTS request that starts the report.
type Request struct {
	Version uint8
	// Param1 holds the request attributes; bit 0 asks for a signature.
	Param1 uint8
	// Param2 is the measurement operation; 0xFF asks for all blocks.
	Param2 uint8
	// Nonce is the requester's nonce: the one the verifier binds.
	Nonce [NonceSize]byte
	// SlotID is SlotIDParam: the certificate slot that signs.
	SlotID uint8
}

// MeasurementBlock is one measurement block of the MEASUREMENTS response
// in the DMTF measurement specification format.
type MeasurementBlock struct {
	// Index is the block index, 1..254.
	Index uint8
	// Spec is the MeasurementSpecification bit mask (bit 0: DMTF).
	Spec uint8
	// ValueType is DMTFSpecMeasurementValueType (bit 7 set: raw bit
	// stream, clear: digest; bits 0..6: what was measured).
	ValueType uint8
	// Value aliases the report's bytes.
	Value []byte
}

// Report is a parsed GPU (or NVSwitch) attestation report: the SPDM 1.1
// GET_MEASUREMENTS request followed by the signed MEASUREMENTS response.
// Its slices alias a private copy of the bytes given to ParseReport.
type Report struct {
	Request Request
	// Version, Param1 and Param2 of the MEASUREMENTS response.
	Version uint8
	Param1  uint8
	Param2  uint8
	// Blocks are the measurement blocks in report order.
	Blocks []MeasurementBlock
	// ResponderNonce is the nonce the GPU chose for the response.
	ResponderNonce [NonceSize]byte
	// Opaque is NVIDIA's opaque data, in report order.
	Opaque []OpaqueField
	// Signature is the raw r||s ECDSA P-384 signature.
	Signature []byte

	raw []byte
}

// ParseReport parses an attestation report. It checks the structure only;
// Verify checks the signature.
func ParseReport(b []byte) (*Report, error) {
	if len(b) < RequestLength+responseFixedLength+SignatureSize {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrReportFormat, len(b))
	}
	if len(b) > maxReportLength {
		return nil, fmt.Errorf("%w: %d bytes is too long", ErrReportFormat, len(b))
	}
	raw := make([]byte, len(b))
	copy(raw, b)
	r := &Report{raw: raw}

	q := raw[:RequestLength]
	r.Request = Request{Version: q[0], Param1: q[2], Param2: q[3], SlotID: q[36]}
	copy(r.Request.Nonce[:], q[4:36])
	switch {
	case q[0] != SPDMVersion11:
		return nil, fmt.Errorf("%w: SPDM version 0x%02x, want 0x%02x", ErrReportFormat, q[0], SPDMVersion11)
	case q[1] != codeGetMeasurements:
		return nil, fmt.Errorf("%w: request code 0x%02x is not GET_MEASUREMENTS", ErrReportFormat, q[1])
	case q[2]&attrSignatureRequested == 0:
		return nil, fmt.Errorf("%w: request does not ask for a signature", ErrReportFormat)
	}

	p := raw[RequestLength:]
	r.Version, r.Param1, r.Param2 = p[0], p[2], p[3]
	switch {
	case p[0] != q[0]:
		return nil, fmt.Errorf("%w: response SPDM version 0x%02x differs from the request's", ErrReportFormat, p[0])
	case p[1] != codeMeasurements:
		return nil, fmt.Errorf("%w: response code 0x%02x is not MEASUREMENTS", ErrReportFormat, p[1])
	}
	nBlocks := int(p[4])
	recLen := int(p[5]) | int(p[6])<<8 | int(p[7])<<16
	off := 8
	if len(p)-off < recLen+NonceSize+2+SignatureSize {
		return nil, fmt.Errorf("%w: measurement record overruns the report", ErrReportFormat)
	}
	blocks, err := parseRecord(p[off:off+recLen:off+recLen], nBlocks)
	if err != nil {
		return nil, err
	}
	r.Blocks = blocks
	off += recLen
	copy(r.ResponderNonce[:], p[off:off+NonceSize])
	off += NonceSize
	opLen := int(binary.LittleEndian.Uint16(p[off : off+2]))
	off += 2
	if opLen > maxOpaqueLength {
		return nil, fmt.Errorf("%w: opaque length %d exceeds %d", ErrReportFormat, opLen, maxOpaqueLength)
	}
	if len(p)-off != opLen+SignatureSize {
		return nil, fmt.Errorf("%w: %d bytes after the opaque length, want %d", ErrReportFormat, len(p)-off, opLen+SignatureSize)
	}
	r.Opaque, err = parseOpaque(p[off : off+opLen : off+opLen])
	if err != nil {
		return nil, err
	}
	off += opLen
	r.Signature = p[off : off+SignatureSize : off+SignatureSize]
	return r, nil
}

// parseRecord splits a measurement record into its blocks.
func parseRecord(rec []byte, n int) ([]MeasurementBlock, error) {
	blocks := make([]MeasurementBlock, 0, n)
	var seen [256]bool
	for len(rec) > 0 {
		if len(rec) < blockHeaderLength {
			return nil, fmt.Errorf("%w: truncated measurement block header", ErrReportFormat)
		}
		idx, spec := rec[0], rec[1]
		size := int(binary.LittleEndian.Uint16(rec[2:4]))
		if len(rec)-blockHeaderLength < size {
			return nil, fmt.Errorf("%w: measurement block %d overruns the record", ErrReportFormat, idx)
		}
		if idx < minMeasurementBlockID || idx > maxMeasurementBlockID {
			return nil, fmt.Errorf("%w: measurement block index %d is reserved", ErrReportFormat, idx)
		}
		if seen[idx] {
			return nil, fmt.Errorf("%w: duplicate measurement block %d", ErrReportFormat, idx)
		}
		seen[idx] = true
		if spec&measurementSpecDMTF == 0 {
			return nil, fmt.Errorf("%w: measurement block %d is not in the DMTF format", ErrReportFormat, idx)
		}
		m := rec[blockHeaderLength : blockHeaderLength+size]
		if len(m) < dmtfHeaderLength || int(binary.LittleEndian.Uint16(m[1:3])) != len(m)-dmtfHeaderLength {
			return nil, fmt.Errorf("%w: measurement block %d has an inconsistent value size", ErrReportFormat, idx)
		}
		blocks = append(blocks, MeasurementBlock{
			Index:     idx,
			Spec:      spec,
			ValueType: m[0],
			Value:     m[dmtfHeaderLength:len(m):len(m)],
		})
		rec = rec[blockHeaderLength+size:]
	}
	if len(blocks) != n {
		return nil, fmt.Errorf("%w: %d measurement blocks, NumberOfBlocks says %d", ErrReportFormat, len(blocks), n)
	}
	return blocks, nil
}

// Raw returns the report's bytes. The caller must not modify them.
func (r *Report) Raw() []byte { return r.raw }

// SignedBytes returns what the signature covers: in SPDM 1.1 the L1/L2
// transcript, that is the request and the response without its signature.
func (r *Report) SignedBytes() []byte { return r.raw[:len(r.raw)-SignatureSize] }

// Nonce returns the requester nonce of the GET_MEASUREMENTS request.
func (r *Report) Nonce() [NonceSize]byte { return r.Request.Nonce }

// Measurement returns the value of the measurement block with the given
// SPDM index (1-based).
func (r *Report) Measurement(index int) ([]byte, bool) {
	for _, b := range r.Blocks {
		if int(b.Index) == index {
			return b.Value, true
		}
	}
	return nil, false
}

// OpaqueValue returns the value of the first opaque field of type t.
func (r *Report) OpaqueValue(t OpaqueType) ([]byte, bool) {
	for _, f := range r.Opaque {
		if f.Type == t {
			return f.Value, true
		}
	}
	return nil, false
}

// DriverVersion returns the driver version from the opaque data
// ("550.90.07"), or "" (NVSwitches report none).
func (r *Report) DriverVersion() string {
	v, _ := r.OpaqueValue(OpaqueDriverVersion)
	return cString(v)
}

// VBIOSVersion returns the VBIOS version formatted like NVIDIA's tools
// ("96.00.9F.00.01"), or "".
func (r *Report) VBIOSVersion() string {
	v, ok := r.OpaqueValue(OpaqueVBIOSVersion)
	if !ok {
		return ""
	}
	return FormatVBIOSVersion(v)
}

// FWID returns the firmware ID from the opaque data, or nil.
func (r *Report) FWID() []byte {
	v, _ := r.OpaqueValue(OpaqueFWID)
	return v
}

// ChipInfo returns the CHIP_INFO opaque field as text (Blackwell names its
// chip there), or "".
func (r *Report) ChipInfo() string {
	v, _ := r.OpaqueValue(OpaqueChipInfo)
	return cString(v)
}

// MeasurementCounts returns the MSRSCNT opaque field: one little-endian
// uint32 per measurement block.
func (r *Report) MeasurementCounts() []uint32 {
	v, _ := r.OpaqueValue(OpaqueMeasurementCount)
	out := make([]uint32, len(v)/4)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(v[4*i:])
	}
	return out
}

// nvdecDisabled reports whether the report says NVDEC0 is disabled.
func (r *Report) nvdecDisabled() bool {
	v, ok := r.OpaqueValue(OpaqueNVDEC0Status)
	return ok && len(v) > 0 && v[0] == NVDECDisabled
}
