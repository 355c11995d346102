package bench

import (
	"testing"
	"time"
)

func TestQuantileNearestRank(t *testing.T) {
	var v []time.Duration
	for i := 1; i <= 1000; i++ {
		v = append(v, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {0.999, 999 * time.Millisecond}, {1, time.Second}, {0, time.Millisecond}} {
		if got := quantile(v, c.q); got != c.want {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if quantile(nil, 0.5) != 0 {
		t.Error("empty input")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := Quick().validate(); err != nil {
		t.Fatal(err)
	}
	if err := Full().validate(); err != nil {
		t.Fatal(err)
	}
	c := Quick()
	c.Rates = []int{100, 0}
	if c.validate() == nil {
		t.Error("a zero rate was accepted")
	}
	c = Quick()
	c.TTFTSamples = 0
	if c.validate() == nil {
		t.Error("zero TTFT samples were accepted")
	}
}
