package nvidia

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
)

// maxEvidenceJSON bounds the JSON input: 8 GPUs and 4 NVSwitches take about
// 150 KiB.
const maxEvidenceJSON = 4 << 20

// nvidiaEvidence is one element of the evidence list NVIDIA's attestation
// SDK serializes: {"arch", "certificate": base64(PEM chain), "evidence":
// base64(report), "nonce": hex}. Other members are ignored.
type nvidiaEvidence struct {
	Arch        string `json:"arch"`
	Certificate string `json:"certificate"`
	Evidence    string `json:"evidence"`
	Nonce       string `json:"nonce"`
}

// nvidiaPayload is the object NEAR AI's and dstack's attestation reports
// carry as "nvidia_payload" (the request body of NVIDIA's remote
// attestation service): {"nonce": hex, "arch": "HOPPER", "evidence_list":
// [...]}. NEAR serves it as a JSON string holding that object.
type nvidiaPayload struct {
	Nonce        string           `json:"nonce"`
	Arch         string           `json:"arch"`
	EvidenceList []nvidiaEvidence `json:"evidence_list"`
}

// ParseNVIDIAEvidenceJSON decodes NVIDIA evidence into Evidence values in
// list order. Three shapes are accepted: the bare list NVIDIA's SDK
// serializes; the {arch, nonce, evidence_list} object of NEAR AI and
// dstack; and that object as a JSON string (NEAR's "nvidia_payload"). In
// the object form the top-level nonce and arch apply to every item that
// names none; an item that names a different one is refused.
// ExpectedNonce is left nil: the caller sets the nonce it asked for (the
// file's own nonce is in ClaimedNonce).
func ParseNVIDIAEvidenceJSON(b []byte) ([]Evidence, error) {
	if len(b) > maxEvidenceJSON {
		return nil, fmt.Errorf("%w: %d bytes is too long", ErrEvidenceFormat, len(b))
	}
	list, err := decodeEvidenceShapes(b, 0)
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("%w: empty evidence list", ErrEvidenceFormat)
	}
	out := make([]Evidence, len(list))
	for i, e := range list {
		rep, err := base64.StdEncoding.DecodeString(e.Evidence)
		if err != nil || len(rep) == 0 {
			return nil, fmt.Errorf("%w: item %d: evidence is not base64", ErrEvidenceFormat, i)
		}
		chain, err := base64.StdEncoding.DecodeString(e.Certificate)
		if err != nil || len(chain) == 0 {
			return nil, fmt.Errorf("%w: item %d: certificate is not base64", ErrEvidenceFormat, i)
		}
		var nonce []byte
		if e.Nonce != "" {
			if nonce, err = hex.DecodeString(e.Nonce); err != nil || len(nonce) != NonceSize {
				return nil, fmt.Errorf("%w: item %d: nonce is not 32 bytes of hex", ErrEvidenceFormat, i)
			}
		}
		out[i] = Evidence{Report: rep, Chain: chain, Arch: e.Arch, ClaimedNonce: nonce}
	}
	return out, nil
}

// decodeEvidenceShapes returns the evidence list of any accepted shape.
// depth bounds the string-in-string unwrapping to one level.
func decodeEvidenceShapes(b []byte, depth int) ([]nvidiaEvidence, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty input", ErrEvidenceFormat)
	}
	switch b[0] {
	case '[':
		var list []nvidiaEvidence
		if err := decodeOne(b, &list); err != nil {
			return nil, err
		}
		return list, nil
	case '{':
		var p nvidiaPayload
		if err := decodeOne(b, &p); err != nil {
			return nil, err
		}
		if p.EvidenceList == nil {
			return nil, fmt.Errorf("%w: object without evidence_list", ErrEvidenceFormat)
		}
		for i := range p.EvidenceList {
			e := &p.EvidenceList[i]
			switch {
			case e.Nonce == "":
				e.Nonce = p.Nonce
			case p.Nonce != "" && !strings.EqualFold(e.Nonce, p.Nonce):
				return nil, fmt.Errorf("%w: item %d: nonce differs from the payload's", ErrEvidenceFormat, i)
			}
			switch {
			case e.Arch == "":
				e.Arch = p.Arch
			case p.Arch != "" && !strings.EqualFold(e.Arch, p.Arch):
				return nil, fmt.Errorf("%w: item %d: arch differs from the payload's", ErrEvidenceFormat, i)
			}
		}
		return p.EvidenceList, nil
	case '"':
		if depth > 0 {
			return nil, fmt.Errorf("%w: nested JSON string", ErrEvidenceFormat)
		}
		var inner string
		if err := decodeOne(b, &inner); err != nil {
			return nil, err
		}
		return decodeEvidenceShapes([]byte(inner), depth+1)
	}
	return nil, fmt.Errorf("%w: neither a list, an object nor a string", ErrEvidenceFormat)
}

// decodeOne decodes exactly one JSON value into v.
func decodeOne(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", ErrEvidenceFormat, err)
	}
	if len(bytes.TrimSpace(b[dec.InputOffset():])) != 0 {
		return fmt.Errorf("%w: trailing data after the JSON value", ErrEvidenceFormat)
	}
	return nil
}
