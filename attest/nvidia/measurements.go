package nvidia

import (
	"bytes"
	"fmt"
	"sort"
)

// nvdecRIMIndex is the RIM index NVIDIA leaves unchecked when the report
// says NVDEC0 is disabled.
const nvdecRIMIndex = 35

// CompareMeasurements compares the report's measurement blocks with the
// active reference measurements of the RIMs (typically the driver RIM and
// the VBIOS RIM), the way NVIDIA's verifiers do: RIM index i describes
// block i+1; each active reference must have the report's size and equal
// one of its alternatives; two RIMs may not both hold an active
// measurement at one index (ErrRIMConflict); index 35 is skipped when
// NVDEC0 is disabled. Blocks no RIM describes are not compared. It returns
// a *MeasurementMismatchError listing every block that failed. It does not
// verify the RIMs' signatures.
func CompareMeasurements(r *Report, rims ...*RIM) error {
	golden := make(map[int]*RIMMeasurement)
	for _, rim := range rims {
		for i := range rim.Measurements {
			m := &rim.Measurements[i]
			if !m.Active {
				continue
			}
			if _, dup := golden[m.Index]; dup {
				return fmt.Errorf("%w: two RIMs hold an active measurement at index %d", ErrRIMConflict, m.Index)
			}
			golden[m.Index] = m
		}
	}
	var bad []int
	for idx, m := range golden {
		if idx == nvdecRIMIndex && r.nvdecDisabled() {
			continue
		}
		if !matchesAny(r, idx+1, m) {
			bad = append(bad, idx+1)
		}
	}
	if len(bad) > 0 {
		sort.Ints(bad)
		return &MeasurementMismatchError{Blocks: bad}
	}
	return nil
}

func matchesAny(r *Report, block int, m *RIMMeasurement) bool {
	v, ok := r.Measurement(block)
	if !ok || len(v) != m.Size {
		return false
	}
	for _, alt := range m.Alternatives {
		if bytes.Equal(v, alt) {
			return true
		}
	}
	return false
}
