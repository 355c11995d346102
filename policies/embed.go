package policies

import (
	"embed"
	"fmt"

	"github.com/open-policy-agent/opa/v1/util"
)

// The shipped policies travel inside every binary that imports this package,
// so a gateway or verify CLI works without the source tree.
//
//go:embed production.rego production.data.json dev.rego dev.data.json
var shipped embed.FS

// BuiltinNames lists the policies Builtin knows.
func BuiltinNames() []string { return []string{"dev", "production"} }

// Builtin compiles one of the shipped policies, "production" or "dev", with
// its shipped data. Each call compiles afresh (a few milliseconds); keep the
// result. The shipped production data pins no measurements, so it denies all
// real evidence until reference values are added (see README.md); load a
// filled-in copy with Load.
func Builtin(name string) (*Policy, error) {
	switch name {
	case "production", "dev":
	default:
		return nil, fmt.Errorf("loading builtin policy %q: %w", name, ErrUnknownPolicy)
	}
	src, err := shipped.ReadFile(name + ".rego")
	if err != nil {
		return nil, fmt.Errorf("reading builtin policy: %w", err)
	}
	raw, err := shipped.ReadFile(name + ".data.json")
	if err != nil {
		return nil, fmt.Errorf("reading builtin policy data: %w", err)
	}
	var data map[string]any
	if err := util.UnmarshalJSON(raw, &data); err != nil {
		return nil, fmt.Errorf("parsing builtin policy data: %w: %w", ErrDataFormat, err)
	}
	return LoadBytes(name, src, data)
}

// BuiltinSource returns the Rego source and data JSON of a shipped policy, for
// operators who want to start their own from it.
func BuiltinSource(name string) (regoSrc, dataJSON []byte, err error) {
	switch name {
	case "production", "dev":
	default:
		return nil, nil, fmt.Errorf("reading builtin policy %q: %w", name, ErrUnknownPolicy)
	}
	if regoSrc, err = shipped.ReadFile(name + ".rego"); err != nil {
		return nil, nil, fmt.Errorf("reading builtin policy: %w", err)
	}
	if dataJSON, err = shipped.ReadFile(name + ".data.json"); err != nil {
		return nil, nil, fmt.Errorf("reading builtin policy data: %w", err)
	}
	return regoSrc, dataJSON, nil
}
