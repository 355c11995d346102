package policies

import (
	"testing"

	"go.uber.org/goleak"
)

// The Watcher runs a goroutine per Watch; every test must stop it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
