package pcs

import (
	"crypto/x509"
	"encoding/asn1"
	"fmt"
)

// OIDs of the SGX extensions in a PCK certificate ("Intel SGX PCK Certificate
// and Certificate Revocation List Profile Specification", §1.3.5).
var (
	OIDSGXExtensions = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1}
	oidPPID          = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 1}
	oidTCB           = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 2}
	oidPCEID         = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 3}
	oidFMSPC         = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 4}
	oidSGXType       = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 5}
)

// PCKTCB is the platform TCB a PCK certificate was issued for.
type PCKTCB struct {
	// CompSVN are SGX TCB components 1..16 (OIDs ...1.2.1 to ...1.2.16).
	CompSVN [16]uint8
	// PCESVN (OID ...1.2.17).
	PCESVN uint16
	// CPUSVN (OID ...1.2.18), the raw 16 bytes.
	CPUSVN [16]byte
}

// PCKExtensions are the decoded SGX extensions of a PCK certificate.
type PCKExtensions struct {
	PPID    []byte
	TCB     PCKTCB
	PCEID   [2]byte
	FMSPC   [6]byte
	SGXType int
}

type asnEntry struct {
	ID    asn1.ObjectIdentifier
	Value asn1.RawValue
}

// ParsePCKExtensions decodes the SGX extensions of a PCK certificate. The
// optional platform-instance and configuration entries of multi-package
// platforms are skipped: no check here depends on them.
func ParsePCKExtensions(cert *x509.Certificate) (*PCKExtensions, error) {
	for _, ext := range cert.Extensions {
		if ext.Id.Equal(OIDSGXExtensions) {
			return parseSGXExtensions(ext.Value)
		}
	}
	return nil, fmt.Errorf("reading PCK certificate: no SGX extensions: %w", ErrPCKChain)
}

func parseSGXExtensions(der []byte) (*PCKExtensions, error) {
	var entries []asnEntry
	if rest, err := asn1.Unmarshal(der, &entries); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("parsing SGX extensions: %w", ErrPCKChain)
	}
	e := &PCKExtensions{}
	var seen [6]bool
	for _, ent := range entries {
		switch {
		case ent.ID.Equal(oidPPID):
			if err := unmarshalOctets(ent.Value, &e.PPID, 16); err != nil {
				return nil, err
			}
			seen[1] = true
		case ent.ID.Equal(oidTCB):
			if err := parseTCBExtension(ent.Value.FullBytes, &e.TCB); err != nil {
				return nil, err
			}
			seen[2] = true
		case ent.ID.Equal(oidPCEID):
			var v []byte
			if err := unmarshalOctets(ent.Value, &v, 2); err != nil {
				return nil, err
			}
			copy(e.PCEID[:], v)
			seen[3] = true
		case ent.ID.Equal(oidFMSPC):
			var v []byte
			if err := unmarshalOctets(ent.Value, &v, 6); err != nil {
				return nil, err
			}
			copy(e.FMSPC[:], v)
			seen[4] = true
		case ent.ID.Equal(oidSGXType):
			var t asn1.Enumerated
			if _, err := asn1.Unmarshal(ent.Value.FullBytes, &t); err != nil {
				return nil, fmt.Errorf("parsing SGX type: %w", ErrPCKChain)
			}
			e.SGXType = int(t)
			seen[5] = true
		}
	}
	for i := 1; i <= 4; i++ {
		if !seen[i] {
			return nil, fmt.Errorf("parsing SGX extensions: entry %d missing: %w", i, ErrPCKChain)
		}
	}
	return e, nil
}

func unmarshalOctets(v asn1.RawValue, dst *[]byte, size int) error {
	var b []byte
	if rest, err := asn1.Unmarshal(v.FullBytes, &b); err != nil || len(rest) != 0 || len(b) != size {
		return fmt.Errorf("parsing SGX extension octets: %w", ErrPCKChain)
	}
	*dst = b
	return nil
}

func parseTCBExtension(der []byte, t *PCKTCB) error {
	var entries []asnEntry
	if rest, err := asn1.Unmarshal(der, &entries); err != nil || len(rest) != 0 {
		return fmt.Errorf("parsing SGX TCB extension: %w", ErrPCKChain)
	}
	var seen [19]bool
	for _, ent := range entries {
		if len(ent.ID) != len(oidTCB)+1 || !ent.ID[:len(oidTCB)].Equal(oidTCB) {
			continue
		}
		n := ent.ID[len(oidTCB)]
		switch {
		case n >= 1 && n <= 17:
			var v int
			if _, err := asn1.Unmarshal(ent.Value.FullBytes, &v); err != nil || v < 0 || (n <= 16 && v > 255) || v > 65535 {
				return fmt.Errorf("parsing SGX TCB component %d: %w", n, ErrPCKChain)
			}
			if n == 17 {
				t.PCESVN = uint16(v)
			} else {
				t.CompSVN[n-1] = uint8(v)
			}
			seen[n] = true
		case n == 18:
			var v []byte
			if err := unmarshalOctets(ent.Value, &v, 16); err != nil {
				return err
			}
			copy(t.CPUSVN[:], v)
			seen[n] = true
		}
	}
	for n := 1; n <= 17; n++ {
		if !seen[n] {
			return fmt.Errorf("parsing SGX TCB extension: component %d missing: %w", n, ErrPCKChain)
		}
	}
	return nil
}

// MarshalPCKExtensions encodes e as the value of the SGX extension, the
// inverse of ParsePCKExtensions. Simulated PCK certificates use it.
func MarshalPCKExtensions(e *PCKExtensions) ([]byte, error) {
	type intEntry struct {
		ID    asn1.ObjectIdentifier
		Value int
	}
	type octEntry struct {
		ID    asn1.ObjectIdentifier
		Value []byte
	}
	type enumEntry struct {
		ID    asn1.ObjectIdentifier
		Value asn1.Enumerated
	}
	var tcb []asn1.RawValue
	add := func(list *[]asn1.RawValue, v any) error {
		b, err := asn1.Marshal(v)
		if err != nil {
			return fmt.Errorf("encoding SGX extension: %w", err)
		}
		*list = append(*list, asn1.RawValue{FullBytes: b})
		return nil
	}
	sub := func(n int) asn1.ObjectIdentifier {
		return append(append(asn1.ObjectIdentifier{}, oidTCB...), n)
	}
	for i, svn := range e.TCB.CompSVN {
		if err := add(&tcb, intEntry{sub(i + 1), int(svn)}); err != nil {
			return nil, err
		}
	}
	if err := add(&tcb, intEntry{sub(17), int(e.TCB.PCESVN)}); err != nil {
		return nil, err
	}
	if err := add(&tcb, octEntry{sub(18), e.TCB.CPUSVN[:]}); err != nil {
		return nil, err
	}
	tcbSeq, err := asn1.Marshal(tcb)
	if err != nil {
		return nil, fmt.Errorf("encoding SGX TCB extension: %w", err)
	}
	ppid := e.PPID
	if ppid == nil {
		ppid = make([]byte, 16)
	}
	var top []asn1.RawValue
	if err := add(&top, octEntry{oidPPID, ppid}); err != nil {
		return nil, err
	}
	if err := add(&top, struct {
		ID    asn1.ObjectIdentifier
		Value asn1.RawValue
	}{oidTCB, asn1.RawValue{FullBytes: tcbSeq}}); err != nil {
		return nil, err
	}
	if err := add(&top, octEntry{oidPCEID, e.PCEID[:]}); err != nil {
		return nil, err
	}
	if err := add(&top, octEntry{oidFMSPC, e.FMSPC[:]}); err != nil {
		return nil, err
	}
	if err := add(&top, enumEntry{oidSGXType, asn1.Enumerated(e.SGXType)}); err != nil {
		return nil, err
	}
	return asn1.Marshal(top)
}
