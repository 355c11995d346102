package bench

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// childEnv makes the test binary the stream server (ServeStreams), as
// `teegate bench -serve-streams` is for the real command.
const childEnv = "TEEGATE_BENCH_TEST_CHILD"

func TestMain(m *testing.M) {
	if v := os.Getenv(childEnv); v != "" {
		n, _ := strconv.Atoi(v)
		if err := ServeStreams(context.Background(), os.Stdin, os.Stdout, n); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestChildHoldsStreams holds a few streams against a stack in a child
// process and checks that each opened and that the child measured itself.
func TestChildHoldsStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a stack in a child process")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=8")
	cmd.Stderr = os.Stderr
	srv, err := StartChild(cmd)
	if err != nil {
		t.Fatal(err)
	}
	s := holdStreams(ctx, srv, 8, 4)
	if err := srv.Close(); err != nil {
		t.Errorf("closing the child: %v", err)
	}
	if s.Open != 8 || s.Errors != 0 {
		t.Fatalf("open %d, errors %d (%s)", s.Open, s.Errors, s.FirstError)
	}
	if s.Before.RSSKiB <= 0 || s.After.RSSKiB <= 0 || s.After.Goroutines <= s.Before.Goroutines {
		t.Errorf("memory samples do not show the streams: before %+v after %+v", s.Before, s.After)
	}
}
