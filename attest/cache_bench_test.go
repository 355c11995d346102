package attest

import (
	"fmt"
	"testing"
)

// BenchmarkVerdictCacheGet is the cost of finding an already verified
// bundle by id: what a receipt check pays for its evidence once the bundle
// was verified.
func BenchmarkVerdictCacheGet(b *testing.B) {
	c := NewVerdictCache(1024)
	ids := make([]string, 512)
	for i := range ids {
		ids[i] = fmt.Sprintf("%064x", i)
		c.Put(&Verified{ID: ids[i]})
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, ok := c.Get(ids[i&511]); !ok {
			b.Fatal("miss")
		}
		i++
	}
}
