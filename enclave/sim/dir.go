package sim

import (
	"crypto/sha512"
	"fmt"
	"path/filepath"

	"github.com/teegate/teegate/enclave/sim/simtdx"
)

// RootDir is the folder under a data directory that holds the simulated
// root (every process that shares the data directory shares the root).
const RootDir = "sim"

// OpenAttester loads or creates the simulated root in dataDir/sim and
// returns an attester over it: the one way every teegate process (dev,
// `teegate worker --tee simulated`, a teegate_sim worker build) gets a
// simulated TEE. cfg.Root is filled in; the root is returned too, so that
// the caller can pin it.
func OpenAttester(dataDir string, cfg Config) (*Attester, *Root, error) {
	root, err := LoadOrCreateRoot(filepath.Join(dataDir, RootDir))
	if err != nil {
		return nil, nil, fmt.Errorf("loading simulated root: %w", err)
	}
	cfg.Root = root
	att, err := NewAttester(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("starting simulated TEE: %w", err)
	}
	return att, root, nil
}

// MeasurementsLabeled returns the default measurements with MRTD replaced
// by SHA-384("teegate simulated mrtd " + label): a simulated TD that
// "runs different code", for exercising pinned-measurement policies
// across processes. An empty label gives the defaults.
func MeasurementsLabeled(label string) simtdx.Measurements {
	m := simtdx.DefaultMeasurements()
	if label != "" {
		m.MRTD = sha512.Sum384([]byte("teegate simulated mrtd " + label))
	}
	return m
}
