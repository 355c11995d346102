package nvidia

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
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

// ParseNVIDIAEvidenceJSON decodes NVIDIA's serialized evidence list into
// Evidence values in list order. ExpectedNonce is left nil: the caller
// sets the nonce it asked for (the file's own nonce is in ClaimedNonce).
func ParseNVIDIAEvidenceJSON(b []byte) ([]Evidence, error) {
	if len(b) > maxEvidenceJSON {
		return nil, fmt.Errorf("%w: %d bytes is too long", ErrEvidenceFormat, len(b))
	}
	var list []nvidiaEvidence
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&list); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEvidenceFormat, err)
	}
	if len(bytes.TrimSpace(b[dec.InputOffset():])) != 0 {
		return nil, fmt.Errorf("%w: trailing data after the list", ErrEvidenceFormat)
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
