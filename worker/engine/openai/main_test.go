package openai

import (
	"testing"

	"go.uber.org/goleak"
)

// Streams own timers, context callbacks and connections; goleak proves every
// path releases them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
