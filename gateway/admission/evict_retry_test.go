package admission

import (
	"math"
	"testing"

	"golang.org/x/time/rate"
)

func TestKeyLimiterRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		r    rate.Limit
		want int
	}{
		{50, 1}, {1, 1}, {0.5, 2}, {0.1, 10}, {0, 1}, {rate.Limit(math.Inf(1)), 1},
	} {
		if got := newKeyLimiter(tc.r, 1).retryAfter(); got != tc.want {
			t.Errorf("rate %v: retry after %d, want %d", tc.r, got, tc.want)
		}
	}
}
