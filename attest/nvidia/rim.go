package nvidia

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/beevik/etree"
	dsig "github.com/russellhaering/goxmldsig"
)

// Namespaces and algorithm identifiers of NVIDIA RIMs: ISO/IEC 19770-2:2015
// SWID tags signed with an enveloped W3C XML Signature (XML-DSig 1.1),
// Canonical XML 1.1, ECDSA P-384 with SHA-384 (RFC 6931 identifiers).
const (
	nsSWID   = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd"
	nsDSig   = "http://www.w3.org/2000/09/xmldsig#"
	algC14N  = "http://www.w3.org/2006/12/xml-c14n11"
	algECDSA = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384"
	algSHA   = "http://www.w3.org/2001/04/xmldsig-more#sha384"
	algEnv   = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
	// Hash attributes of a Resource live in the namespace of their digest
	// algorithm (xmlenc#sha384 in every RIM NVIDIA publishes).
	nsHashPrefix = "http://www.w3.org/2001/04/xmlenc#sha"

	maxRIMSize = 4 << 20
)

var hashAttr = regexp.MustCompile(`^Hash([0-9]+)$`)

// RIMMeasurement is one reference measurement (a SWID Resource element).
type RIMMeasurement struct {
	// Index is the RIM's index attribute (0-based); it describes the
	// report's measurement block Index+1.
	Index int
	// Active measurements are compared; inactive ones are not.
	Active bool
	// Size is the digest size in bytes.
	Size int
	// Alternatives are the accepted values; the report must equal one.
	Alternatives [][]byte
}

// RIM is a parsed NVIDIA reference integrity manifest (driver, VBIOS or
// NVSwitch BIOS). Parse it once with ParseRIM, verify it once with Verify;
// it is then safe to share between goroutines.
type RIM struct {
	// TagID is the SWID tagId.
	TagID string
	// Name is the SWID name (the chip: "GH100", "LS10").
	Name string
	// Version is Meta's colloquialVersion: the driver version
	// ("550.144.03") or the VBIOS version ("96.00.5E.00.01") it describes.
	Version string
	// Product and Edition are Meta's attributes ("GH100", "GPU").
	Product, Edition string
	// Measurements are the reference measurements in document order.
	Measurements []RIMMeasurement
	// Certs is the chain in KeyInfo, signer first.
	Certs []*x509.Certificate

	root        *etree.Element // SoftwareIdentity
	sigEl       *etree.Element // the enveloped ds:Signature
	signedInfo  *etree.Element
	digestValue []byte
	sigValue    []byte

	mu       sync.Mutex
	verified *rimVerification
}

// rimVerification records a successful Verify so Verify (the package
// function) need not redo it for every report.
type rimVerification struct {
	roots               *x509.CertPool
	notBefore, notAfter time.Time
	// path is the verified signer path, signer first, ending with the root.
	path []*x509.Certificate
}

// ParseRIM parses a RIM and checks its structure: one SoftwareIdentity with
// one enveloped signature over the whole document with the algorithms
// NVIDIA uses. It does not check the signature: call Verify.
func ParseRIM(b []byte) (*RIM, error) {
	if len(b) > maxRIMSize {
		return nil, fmt.Errorf("%w: %d bytes is too long", ErrRIMFormat, len(b))
	}
	doc := etree.NewDocument()
	doc.ReadSettings.Permissive = false
	if err := doc.ReadFromBytes(b); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRIMFormat, err)
	}
	for _, t := range doc.Child {
		// No DTDs: they could declare entities or default attributes that
		// change what the signature covers.
		if _, ok := t.(*etree.Directive); ok {
			return nil, fmt.Errorf("%w: document type declarations are not allowed", ErrRIMFormat)
		}
	}
	root := doc.Root()
	if root == nil || root.Tag != "SoftwareIdentity" || root.NamespaceURI() != nsSWID {
		return nil, fmt.Errorf("%w: root is not a SWID SoftwareIdentity", ErrRIMFormat)
	}
	r := &RIM{
		root:  root,
		TagID: root.SelectAttrValue("tagId", ""),
		Name:  root.SelectAttrValue("name", ""),
	}
	var payload *etree.Element
	for _, el := range root.ChildElements() {
		switch {
		case el.Tag == "Meta" && el.NamespaceURI() == nsSWID:
			if r.Version == "" {
				r.Version = el.SelectAttrValue("colloquialVersion", "")
				r.Product = el.SelectAttrValue("product", "")
				r.Edition = el.SelectAttrValue("edition", "")
			}
		case el.Tag == "Payload" && el.NamespaceURI() == nsSWID:
			if payload != nil {
				return nil, fmt.Errorf("%w: more than one Payload", ErrRIMFormat)
			}
			payload = el
		case el.Tag == "Signature" && el.NamespaceURI() == nsDSig:
			if r.sigEl != nil {
				return nil, fmt.Errorf("%w: more than one Signature", ErrRIMFormat)
			}
			r.sigEl = el
		}
	}
	if payload == nil {
		return nil, fmt.Errorf("%w: no Payload", ErrRIMFormat)
	}
	if r.sigEl == nil {
		return nil, fmt.Errorf("%w: no enveloped Signature", ErrRIMFormat)
	}
	if n := countSignatures(root); n != 1 {
		return nil, fmt.Errorf("%w: %d Signature elements, want 1", ErrRIMFormat, n)
	}
	if err := r.parsePayload(payload); err != nil {
		return nil, err
	}
	if err := r.parseSignature(); err != nil {
		return nil, err
	}
	return r, nil
}

func countSignatures(el *etree.Element) int {
	n := 0
	if el.Tag == "Signature" && el.NamespaceURI() == nsDSig {
		n++
	}
	for _, c := range el.ChildElements() {
		n += countSignatures(c)
	}
	return n
}

func (r *RIM) parsePayload(payload *etree.Element) error {
	seen := make(map[int]bool)
	for _, el := range payload.ChildElements() {
		if el.Tag != "Resource" || el.NamespaceURI() != nsSWID || el.SelectAttrValue("type", "") != "Measurement" {
			continue
		}
		m, err := parseResource(el)
		if err != nil {
			return err
		}
		if seen[m.Index] {
			return fmt.Errorf("%w: duplicate measurement index %d", ErrRIMFormat, m.Index)
		}
		seen[m.Index] = true
		r.Measurements = append(r.Measurements, m)
	}
	if len(r.Measurements) == 0 {
		return fmt.Errorf("%w: no measurements", ErrRIMFormat)
	}
	return nil
}

func parseResource(el *etree.Element) (RIMMeasurement, error) {
	var m RIMMeasurement
	idx, err := strconv.Atoi(el.SelectAttrValue("index", ""))
	if err != nil || idx < 0 || idx >= maxMeasurementBlockID {
		return m, fmt.Errorf("%w: bad measurement index %q", ErrRIMFormat, el.SelectAttrValue("index", ""))
	}
	m.Index = idx
	switch strings.ToLower(el.SelectAttrValue("active", "")) {
	case "true":
		m.Active = true
	case "false":
	default:
		return m, fmt.Errorf("%w: measurement %d: bad active attribute", ErrRIMFormat, idx)
	}
	m.Size, err = strconv.Atoi(el.SelectAttrValue("size", ""))
	if err != nil || m.Size <= 0 || m.Size > 64 {
		return m, fmt.Errorf("%w: measurement %d: bad size", ErrRIMFormat, idx)
	}
	n, err := strconv.Atoi(el.SelectAttrValue("alternatives", ""))
	if err != nil || n <= 0 || n > 64 {
		return m, fmt.Errorf("%w: measurement %d: bad alternatives count", ErrRIMFormat, idx)
	}
	m.Alternatives = make([][]byte, n)
	for i := range el.Attr {
		a := &el.Attr[i]
		k := hashAttr.FindStringSubmatch(a.Key)
		if k == nil || !strings.HasPrefix(a.NamespaceURI(), nsHashPrefix) {
			continue
		}
		j, err := strconv.Atoi(k[1])
		if err != nil || j >= n || m.Alternatives[j] != nil {
			return m, fmt.Errorf("%w: measurement %d: unexpected %s", ErrRIMFormat, idx, a.Key)
		}
		v, err := hex.DecodeString(a.Value)
		if err != nil || len(v) != m.Size {
			return m, fmt.Errorf("%w: measurement %d: %s is not %d bytes of hex", ErrRIMFormat, idx, a.Key, m.Size)
		}
		m.Alternatives[j] = v
	}
	for j, v := range m.Alternatives {
		if v == nil {
			return m, fmt.Errorf("%w: measurement %d: Hash%d missing", ErrRIMFormat, idx, j)
		}
	}
	return m, nil
}

// child returns the only child element of el with the given XML-DSig local
// name.
func child(el *etree.Element, tag string) (*etree.Element, error) {
	var found *etree.Element
	for _, c := range el.ChildElements() {
		if c.Tag == tag && c.NamespaceURI() == nsDSig {
			if found != nil {
				return nil, fmt.Errorf("%w: more than one %s", ErrRIMFormat, tag)
			}
			found = c
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: no %s", ErrRIMFormat, tag)
	}
	return found, nil
}

func algorithm(el *etree.Element, tag, want string) error {
	c, err := child(el, tag)
	if err != nil {
		return err
	}
	if got := c.SelectAttrValue("Algorithm", ""); got != want {
		return fmt.Errorf("%w: %s %q, want %q", ErrRIMFormat, tag, got, want)
	}
	return nil
}

func decodeB64(s string) ([]byte, error) {
	return base64.StdEncoding.DecodeString(strings.Map(func(r rune) rune {
		if r == ' ' || r == '\n' || r == '\r' || r == '\t' {
			return -1
		}
		return r
	}, s))
}

// parseSignature checks the signature's shape: only the algorithms NVIDIA
// uses, one Reference to the whole document ("" URI) with exactly the
// enveloped-signature and C14N 1.1 transforms.
func (r *RIM) parseSignature() error {
	si, err := child(r.sigEl, "SignedInfo")
	if err != nil {
		return err
	}
	r.signedInfo = si
	if err := algorithm(si, "CanonicalizationMethod", algC14N); err != nil {
		return err
	}
	if err := algorithm(si, "SignatureMethod", algECDSA); err != nil {
		return err
	}
	ref, err := child(si, "Reference")
	if err != nil {
		return err
	}
	if uri := ref.SelectAttr("URI"); uri == nil || uri.Value != "" {
		return fmt.Errorf("%w: Reference must cover the whole document", ErrRIMFormat)
	}
	tr, err := child(ref, "Transforms")
	if err != nil {
		return err
	}
	var algs []string
	for _, t := range tr.ChildElements() {
		if t.Tag != "Transform" || t.NamespaceURI() != nsDSig || len(t.ChildElements()) != 0 {
			return fmt.Errorf("%w: unexpected element in Transforms", ErrRIMFormat)
		}
		algs = append(algs, t.SelectAttrValue("Algorithm", ""))
	}
	if len(algs) != 2 || algs[0] != algEnv || algs[1] != algC14N {
		return fmt.Errorf("%w: transforms %q, want enveloped-signature then C14N 1.1", ErrRIMFormat, algs)
	}
	if err := algorithm(ref, "DigestMethod", algSHA); err != nil {
		return err
	}
	dv, err := child(ref, "DigestValue")
	if err != nil {
		return err
	}
	if r.digestValue, err = decodeB64(dv.Text()); err != nil || len(r.digestValue) != sha512.Size384 {
		return fmt.Errorf("%w: DigestValue is not a base64 SHA-384 digest", ErrRIMFormat)
	}
	sv, err := child(r.sigEl, "SignatureValue")
	if err != nil {
		return err
	}
	if r.sigValue, err = decodeB64(sv.Text()); err != nil || len(r.sigValue) != SignatureSize {
		return fmt.Errorf("%w: SignatureValue is not a base64 P-384 r||s", ErrRIMFormat)
	}
	ki, err := child(r.sigEl, "KeyInfo")
	if err != nil {
		return err
	}
	xd, err := child(ki, "X509Data")
	if err != nil {
		return err
	}
	for _, c := range xd.ChildElements() {
		if c.Tag != "X509Certificate" || c.NamespaceURI() != nsDSig {
			continue
		}
		der, err := decodeB64(c.Text())
		if err != nil {
			return fmt.Errorf("%w: X509Certificate is not base64", ErrRIMFormat)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("%w: X509Certificate %d: %w", ErrRIMFormat, len(r.Certs), err)
		}
		r.Certs = append(r.Certs, cert)
	}
	if len(r.Certs) == 0 {
		return fmt.Errorf("%w: no X509Certificate in KeyInfo", ErrRIMFormat)
	}
	return nil
}

// Verify checks the signer's chain (KeyInfo) to roots at now (the zero
// time means time.Now()), then the RIM's reference digest and signature.
//
// goxmldsig's own validation rejects genuine NVIDIA RIMs, so only its
// canonicalizer is used: the reference digest is SHA-384 over the C14N 1.1
// form of the document without its Signature element, and the signature is
// a raw r||s ECDSA P-384 signature over SHA-384 of SignedInfo in C14N 1.1
// form, which (as a document subset) carries every namespace declaration in
// scope from its ancestors.
func (r *RIM) Verify(roots *x509.CertPool, now time.Time) error {
	if now.IsZero() {
		now = time.Now()
	}
	// The chain first, as NVIDIA's verifiers do, so an expired or foreign
	// signer is reported as such whatever the signature says.
	path, err := verifyChain(r.Certs, roots, now, ErrRIMChain)
	if err != nil {
		return err
	}
	canon := dsig.MakeC14N11Canonicalizer()

	doc := r.root.Copy()
	for _, el := range doc.ChildElements() {
		if el.Tag == "Signature" && el.NamespaceURI() == nsDSig {
			doc.RemoveChild(el)
		}
	}
	body, err := canon.Canonicalize(doc)
	if err != nil {
		return fmt.Errorf("%w: canonicalizing the document: %w", ErrRIMFormat, err)
	}
	sum := sha512.Sum384(body)
	if !bytes.Equal(sum[:], r.digestValue) {
		return fmt.Errorf("%w: reference digest mismatch", ErrRIMSignature)
	}

	si, err := canon.Canonicalize(withInScopeNamespaces(r.signedInfo))
	if err != nil {
		return fmt.Errorf("%w: canonicalizing SignedInfo: %w", ErrRIMFormat, err)
	}
	key, ok := path[0].PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("%w: signer key is not ECDSA", ErrRIMSignature)
	}
	siSum := sha512.Sum384(si)
	rr := new(big.Int).SetBytes(r.sigValue[:SignatureSize/2])
	ss := new(big.Int).SetBytes(r.sigValue[SignatureSize/2:])
	if !ecdsa.Verify(key, siSum[:], rr, ss) {
		return fmt.Errorf("%w: ECDSA signature does not verify", ErrRIMSignature)
	}

	v := &rimVerification{roots: roots, notBefore: path[0].NotBefore, notAfter: path[0].NotAfter, path: path}
	for _, c := range path[1:] {
		if c.NotBefore.After(v.notBefore) {
			v.notBefore = c.NotBefore
		}
		if c.NotAfter.Before(v.notAfter) {
			v.notAfter = c.NotAfter
		}
	}
	r.mu.Lock()
	r.verified = v
	r.mu.Unlock()
	return nil
}

// ensureVerified reuses an earlier successful Verify against the same root
// pool while now stays inside the chain's validity; otherwise it verifies.
// It returns the verified signer path.
func (r *RIM) ensureVerified(roots *x509.CertPool, now time.Time) ([]*x509.Certificate, error) {
	r.mu.Lock()
	v := r.verified
	r.mu.Unlock()
	if v == nil || v.roots != roots || now.Before(v.notBefore) || now.After(v.notAfter) {
		if err := r.Verify(roots, now); err != nil {
			return nil, err
		}
		r.mu.Lock()
		v = r.verified
		r.mu.Unlock()
	}
	return v.path, nil
}

// withInScopeNamespaces returns a detached copy of el that declares every
// namespace (and inheritable xml: attribute) in scope from its ancestors,
// nearest declaration first, as inclusive canonicalization of a document
// subset requires.
func withInScopeNamespaces(el *etree.Element) *etree.Element {
	cp := el.Copy()
	have := make(map[string]bool)
	for _, a := range cp.Attr {
		have[a.FullKey()] = true
	}
	for p := el.Parent(); p != nil; p = p.Parent() {
		for _, a := range p.Attr {
			k := a.FullKey()
			inherit := a.Space == "xmlns" || (a.Space == "" && a.Key == "xmlns") ||
				(a.Space == "xml" && (a.Key == "lang" || a.Key == "space"))
			if inherit && !have[k] {
				cp.CreateAttr(k, a.Value)
				have[k] = true
			}
		}
	}
	return cp
}

// RIMIDs returns the ids under which NVIDIA's RIM service
// (https://rim.attestation.nvidia.com/v1/rim/{id}) serves the reference
// manifests of a verified report, as NVIDIA's attestation SDK builds them:
// the driver RIM ("NV_GPU_DRIVER_GH100_{driver}" on Hopper,
// "NV_GPU_CC_DRIVER_{chip}_{driver}" on Blackwell with the chip from the
// opaque CHIP_INFO, GB100 without it; none for an NVSwitch) and the VBIOS
// or switch BIOS RIM ("NV_GPU_VBIOS_" or "NV_SWITCH_BIOS_" + project _
// project SKU _ chip SKU _ version without dots). An id whose parts the
// report lacks is left out.
func RIMIDs(r *Report, arch string) (driver, vbios string) {
	if d := r.DriverVersion(); d != "" {
		switch arch {
		case ArchHopper:
			driver = "NV_GPU_DRIVER_GH100_" + d
		case ArchBlackwell:
			chip := "GB100"
			if v, ok := r.OpaqueValue(OpaqueChipInfo); ok && cString(v) != "" {
				chip = cString(v)
			}
			driver = "NV_GPU_CC_DRIVER_" + chip + "_" + d
		}
	}
	project, _ := r.OpaqueValue(OpaqueProject)
	sku, _ := r.OpaqueValue(OpaqueProjectSKU)
	chipSKU, _ := r.OpaqueValue(OpaqueChipSKU)
	version := strings.ReplaceAll(r.VBIOSVersion(), ".", "")
	if cString(project) == "" || cString(sku) == "" || cString(chipSKU) == "" || version == "" {
		return driver, ""
	}
	prefix := "NV_GPU_VBIOS_"
	if arch == ArchNVSwitch {
		prefix = "NV_SWITCH_BIOS_"
	}
	return driver, prefix + cString(project) + "_" + cString(sku) + "_" + cString(chipSKU) + "_" + strings.ToUpper(version)
}
