package nvidia

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Architectures as they appear in claims.GPU.Arch.
const (
	ArchHopper    = "hopper"
	ArchBlackwell = "blackwell"
	ArchNVSwitch  = "nvswitch"
	ArchSimulated = "simulated"
)

// OIDDICETcbInfo is the TCG DICE extension that carries the firmware ID
// (FWID) of the layer that holds the certified key on Hopper GPUs and
// NVSwitches: 2.23.133.5.4.1.
var OIDDICETcbInfo = asn1.ObjectIdentifier{2, 23, 133, 5, 4, 1}

// OIDDICETcbInfoBlackwell is the extension under which Blackwell leaf
// certificates carry a TCG DICE TcbInfo (fwids at [6]): 2.23.133.5.4.1.1.
// Hopper certificates do not carry it, and Blackwell certificates do not
// carry 2.23.133.5.4.1, so the FWID is read from the extension of the
// leaf's architecture only.
var OIDDICETcbInfoBlackwell = asn1.ObjectIdentifier{2, 23, 133, 5, 4, 1, 1}

// maxChainPEM bounds the PEM input; a 5-certificate chain is about 5 KiB.
const maxChainPEM = 64 << 10

// ParseCertChain parses a PEM sequence of certificates, leaf first, as
// NVML and NVIDIA's evidence JSON deliver it. Anything but CERTIFICATE
// blocks and whitespace is rejected.
func ParseCertChain(b []byte) ([]*x509.Certificate, error) {
	if len(b) > maxChainPEM {
		return nil, fmt.Errorf("%w: %d bytes of PEM is too long", ErrCertFormat, len(b))
	}
	var certs []*x509.Certificate
	rest := b
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: unexpected PEM block %q", ErrCertFormat, blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %w", ErrCertFormat, len(certs), err)
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: trailing data after the certificates", ErrCertFormat)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: no certificate", ErrCertFormat)
	}
	return certs, nil
}

// leafInfo is what the verifier needs from a verified chain; the chain
// cache keeps it so a cached chain costs no parsing.
type leafInfo struct {
	key  *ecdsa.PublicKey
	arch string
	fwid []byte
	// notBefore/notAfter is the intersection of the validity periods of
	// the certificates of the verified path, root included.
	notBefore, notAfter time.Time
	// path is the verified path, leaf first, ending with the root (for
	// revocation checks, which depend on the time and are never cached).
	path []*x509.Certificate
}

// verifyChain verifies certs (leaf first) to roots at now and returns the
// verified path, leaf first, ending with the trusted root. kind is the
// sentinel for a chain that does not verify (ErrCertChain or ErrRIMChain).
func verifyChain(certs []*x509.Certificate, roots *x509.CertPool, now time.Time, kind error) ([]*x509.Certificate, error) {
	if roots == nil {
		return nil, fmt.Errorf("%w: no trusted roots configured", kind)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: empty chain", kind)
	}
	// A self-signed certificate (the root's copy that ends NVIDIA's chains)
	// is useless as an intermediate and would only make x509 explore, and
	// verify signatures along, a second path through it.
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		if !bytes.Equal(c.RawIssuer, c.RawSubject) {
			inter.AddCert(c)
		}
	}
	chains, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.Expired {
			return nil, fmt.Errorf("%w: %w: %w", kind, ErrCertExpired, err)
		}
		return nil, fmt.Errorf("%w: %w", kind, err)
	}
	// Every certificate offered must be on the verified path, in order, so
	// a chain cannot smuggle in certificates nobody checked. The offered
	// chain may end with the root itself or stop below it.
	for _, path := range chains {
		if pathCovers(path, certs) {
			return path, nil
		}
	}
	return nil, fmt.Errorf("%w: the certificates are not one ordered path to a root", kind)
}

func pathCovers(path, certs []*x509.Certificate) bool {
	if len(certs) > len(path) || len(certs) < len(path)-1 {
		return false
	}
	for i, c := range certs {
		if !c.Equal(path[i]) {
			return false
		}
	}
	return true
}

// leafFromPath extracts what the verifier needs from a verified path.
func leafFromPath(path []*x509.Certificate) (*leafInfo, error) {
	leaf := path[0]
	key, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || key.Curve != elliptic.P384() {
		return nil, fmt.Errorf("%w: leaf key is not ECDSA P-384", ErrCertFormat)
	}
	arch := archFromCert(leaf)
	fwid, err := certFWID(leaf, arch)
	if err != nil {
		return nil, err
	}
	li := &leafInfo{key: key, arch: arch, fwid: fwid, path: path}
	li.notBefore, li.notAfter = leaf.NotBefore, leaf.NotAfter
	for _, c := range path[1:] {
		if c.NotBefore.After(li.notBefore) {
			li.notBefore = c.NotBefore
		}
		if c.NotAfter.Before(li.notAfter) {
			li.notAfter = c.NotAfter
		}
	}
	return li, nil
}

// archFromCert names the architecture from the leaf's common name, which
// starts with the chip: "GH100 A01 GSP FMC LF", "GB100 ...", "LS_10 A01 FSP
// FMC LF". The simulated GPU of enclave/sim/simgpu starts with "SIMULATED".
func archFromCert(c *x509.Certificate) string {
	chip, _, _ := strings.Cut(c.Subject.CommonName, " ")
	chip = strings.ToUpper(chip)
	switch {
	case strings.HasPrefix(chip, "GH1"):
		return ArchHopper
	case strings.HasPrefix(chip, "GB1"), strings.HasPrefix(chip, "GB2"):
		return ArchBlackwell
	case strings.HasPrefix(chip, "LS_10"), strings.HasPrefix(chip, "LS10"):
		return ArchNVSwitch
	case chip == "SIMULATED":
		return ArchSimulated
	}
	return "unknown"
}

// archFromHint maps the "arch" member of NVIDIA's evidence JSON.
func archFromHint(s string) string {
	switch strings.ToUpper(s) {
	case "HOPPER":
		return ArchHopper
	case "BLACKWELL":
		return ArchBlackwell
	case "LS10", "NVSWITCH":
		return ArchNVSwitch
	case "SIMULATED":
		return ArchSimulated
	}
	return strings.ToLower(s)
}

// fwidEntry is FWID ::= SEQUENCE { hashAlg OBJECT IDENTIFIER, digest OCTET
// STRING } (TCG DICE).
type fwidEntry struct {
	HashAlg asn1.ObjectIdentifier
	Digest  []byte
}

// compositeDeviceID is the layout NVIDIA's certificates carry under
// 2.23.133.5.4.1: the composite device identifier of the TCG "Implicit
// Identity Based Device Attestation" (DICE) specification, SEQUENCE {
// version INTEGER, deviceID SubjectPublicKeyInfo, fwid FWID }.
type compositeDeviceID struct {
	Version  int
	DeviceID asn1.RawValue
	FWID     fwidEntry
}

// fwidOID names the extension that carries the FWID for an architecture.
func fwidOID(arch string) asn1.ObjectIdentifier {
	if arch == ArchBlackwell {
		return OIDDICETcbInfoBlackwell
	}
	return OIDDICETcbInfo
}

// certFWID returns the FWID of the leaf's DICE extension for the leaf's
// architecture (see fwidOID), or nil when the leaf has none. Under
// 2.23.133.5.4.1 (Hopper, NVSwitch) NVIDIA uses the composite device
// identifier; a DiceTcbInfo there is read too. Under 2.23.133.5.4.1.1
// (Blackwell) only a DiceTcbInfo is accepted. Of a DiceTcbInfo's fwids
// ([6] IMPLICIT SEQUENCE OF FWID) the first is the one the report carries.
func certFWID(c *x509.Certificate, arch string) ([]byte, error) {
	oid := fwidOID(arch)
	for _, ext := range c.Extensions {
		if !ext.Id.Equal(oid) {
			continue
		}
		if arch != ArchBlackwell {
			var cdi compositeDeviceID
			if rest, err := asn1.Unmarshal(ext.Value, &cdi); err == nil && len(rest) == 0 {
				return cdi.FWID.Digest, nil
			}
		}
		return tcbInfoFWID(ext.Value)
	}
	return nil, nil
}

// tcbInfoFWID reads the first FWID of a DER DiceTcbInfo (TCG DICE
// Attestation Architecture §6.1.1: SEQUENCE { vendor [0], model [1],
// version [2], svn [3], layer [4], index [5], fwids [6], flags [7],
// vendorInfo [8], type [9] }, every member optional and IMPLICIT). A
// TcbInfo without fwids yields nil.
func tcbInfoFWID(der []byte) ([]byte, error) {
	var seq asn1.RawValue
	if rest, err := asn1.Unmarshal(der, &seq); err != nil || len(rest) != 0 || seq.Tag != asn1.TagSequence || !seq.IsCompound {
		return nil, fmt.Errorf("%w: unreadable DICE TcbInfo extension", ErrCertFormat)
	}
	inner := seq.Bytes
	for len(inner) > 0 {
		var f asn1.RawValue
		rest, err := asn1.Unmarshal(inner, &f)
		if err != nil {
			return nil, fmt.Errorf("%w: unreadable DICE TcbInfo: %w", ErrCertFormat, err)
		}
		inner = rest
		if f.Class != asn1.ClassContextSpecific || f.Tag != 6 {
			continue
		}
		var list []fwidEntry
		if rest, err := asn1.UnmarshalWithParams(f.FullBytes, &list, "tag:6"); err != nil || len(rest) != 0 || len(list) == 0 {
			return nil, fmt.Errorf("%w: unreadable DICE TcbInfo fwids", ErrCertFormat)
		}
		if len(list[0].Digest) == 0 {
			return nil, fmt.Errorf("%w: empty FWID digest in DICE TcbInfo", ErrCertFormat)
		}
		return list[0].Digest, nil
	}
	return nil, nil
}

// ArchFromCertificate names a device's architecture from its leaf
// certificate (ArchHopper, ArchBlackwell, ArchNVSwitch, ArchSimulated or
// "unknown"), as Verify does. It authenticates nothing.
func ArchFromCertificate(leaf *x509.Certificate) string { return archFromCert(leaf) }
