//go:build cgo && linux

package nvgpu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// childEnv makes the test binary act as the child of TestRealNVMLInChild.
const childEnv = "TEEGATE_NVGPU_CHILD"

// TestRealNVMLInChild runs the real go-nvml binding in a separate process,
// so that an NVML abort (the failure mode of calls after a failed Init)
// fails this test instead of killing the test binary: the child must exit
// normally and report either a clean ErrNoDriver or a probe result.
func TestRealNVMLInChild(t *testing.T) {
	if os.Getenv(childEnv) == "1" {
		realChild()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRealNVMLInChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child crashed or failed: %v\n%s", err, out)
	}
	s := string(out)
	switch {
	case strings.Contains(s, "RESULT no-driver"):
		t.Log("no NVIDIA driver: Open and Probe failed cleanly")
	case strings.Contains(s, "RESULT probe"):
		t.Logf("NVIDIA driver present:\n%s", s)
	default:
		t.Fatalf("unexpected child output:\n%s", s)
	}
}

func realChild() {
	ctx := context.Background()
	_, oerr := Open(ctx)
	res, perr := Probe(ctx)
	if errors.Is(oerr, ErrNoDriver) && errors.Is(perr, ErrNoDriver) {
		// Twice more: a failed Init must leave nothing behind that a second
		// attempt could trip over.
		if _, err := Open(ctx); !errors.Is(err, ErrNoDriver) {
			fmt.Println("RESULT bad second open:", err)
			return
		}
		fmt.Println("RESULT no-driver:", oerr)
		return
	}
	fmt.Printf("RESULT probe: open err=%v probe err=%v result=%+v\n", oerr, perr, res)
	var b strings.Builder
	WriteProbe(ctx, &b)
	fmt.Print(b.String())
}
