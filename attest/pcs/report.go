package pcs

import (
	"encoding/binary"
	"fmt"
)

// EnclaveReportSize is the size of an SGX REPORTBODY: the ISV enclave report
// of an SGX quote and the QE report of SGX and TDX quotes ("Intel SGX ECDSA
// Quote Library API", Appendix A.4 "Enclave Report Body"; "Intel TDX DCAP
// Quoting Library API", A.3.10).
const EnclaveReportSize = 384

// SGX enclave attribute flags (SECS.ATTRIBUTES.FLAGS, Intel SDM Vol. 3D §38.7.1).
const (
	AttributeInit   = 1 << 0
	AttributeDebug  = 1 << 1
	AttributeMode64 = 1 << 2
)

// EnclaveReport is a decoded SGX REPORTBODY. Every byte is kept (reserved
// fields too) so Marshal re-encodes it exactly; signatures cover those bytes.
type EnclaveReport struct {
	CPUSVN       [16]byte // offset 0
	MiscSelect   uint32   // 16, little-endian
	Reserved1    [12]byte // 20
	ISVExtProdID [16]byte // 32
	Attributes   [16]byte // 48: FLAGS (u64 LE) || XFRM (u64 LE)
	MRENCLAVE    [32]byte // 64
	Reserved2    [32]byte // 96
	MRSIGNER     [32]byte // 128
	Reserved3    [32]byte // 160
	ConfigID     [64]byte // 192
	ISVProdID    uint16   // 256
	ISVSVN       uint16   // 258
	ConfigSVN    uint16   // 260
	Reserved4    [42]byte // 262
	ISVFamilyID  [16]byte // 304
	ReportData   [64]byte // 320
}

// ParseEnclaveReport decodes exactly EnclaveReportSize bytes.
func ParseEnclaveReport(b []byte) (*EnclaveReport, error) {
	if len(b) != EnclaveReportSize {
		return nil, fmt.Errorf("parsing enclave report: %d bytes, want %d: %w", len(b), EnclaveReportSize, ErrQuoteFormat)
	}
	r := &EnclaveReport{}
	copy(r.CPUSVN[:], b[0:16])
	r.MiscSelect = binary.LittleEndian.Uint32(b[16:20])
	copy(r.Reserved1[:], b[20:32])
	copy(r.ISVExtProdID[:], b[32:48])
	copy(r.Attributes[:], b[48:64])
	copy(r.MRENCLAVE[:], b[64:96])
	copy(r.Reserved2[:], b[96:128])
	copy(r.MRSIGNER[:], b[128:160])
	copy(r.Reserved3[:], b[160:192])
	copy(r.ConfigID[:], b[192:256])
	r.ISVProdID = binary.LittleEndian.Uint16(b[256:258])
	r.ISVSVN = binary.LittleEndian.Uint16(b[258:260])
	r.ConfigSVN = binary.LittleEndian.Uint16(b[260:262])
	copy(r.Reserved4[:], b[262:304])
	copy(r.ISVFamilyID[:], b[304:320])
	copy(r.ReportData[:], b[320:384])
	return r, nil
}

// AppendMarshal appends the 384-byte encoding of r to dst.
func (r *EnclaveReport) AppendMarshal(dst []byte) []byte {
	dst = append(dst, r.CPUSVN[:]...)
	dst = binary.LittleEndian.AppendUint32(dst, r.MiscSelect)
	dst = append(dst, r.Reserved1[:]...)
	dst = append(dst, r.ISVExtProdID[:]...)
	dst = append(dst, r.Attributes[:]...)
	dst = append(dst, r.MRENCLAVE[:]...)
	dst = append(dst, r.Reserved2[:]...)
	dst = append(dst, r.MRSIGNER[:]...)
	dst = append(dst, r.Reserved3[:]...)
	dst = append(dst, r.ConfigID[:]...)
	dst = binary.LittleEndian.AppendUint16(dst, r.ISVProdID)
	dst = binary.LittleEndian.AppendUint16(dst, r.ISVSVN)
	dst = binary.LittleEndian.AppendUint16(dst, r.ConfigSVN)
	dst = append(dst, r.Reserved4[:]...)
	dst = append(dst, r.ISVFamilyID[:]...)
	dst = append(dst, r.ReportData[:]...)
	return dst
}

// Marshal returns the 384-byte encoding of r.
func (r *EnclaveReport) Marshal() []byte {
	return r.AppendMarshal(make([]byte, 0, EnclaveReportSize))
}

// Debug reports whether the enclave runs in debug mode (ATTRIBUTES.DEBUG).
func (r *EnclaveReport) Debug() bool { return r.Attributes[0]&AttributeDebug != 0 }
