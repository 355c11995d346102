package proctest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// packages are the binaries Dir builds, by file name.
var packages = [][2]string{
	{"teegate", "github.com/teegate/teegate/cmd/teegate"},
	{"nats-server", "github.com/nats-io/nats-server/v2"},
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// Dir returns a folder holding teegate and nats-server (the pinned module
// version), built once per test process. Main removes it.
func Dir(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "teegate-test-bin"); buildErr != nil {
			return
		}
		for _, p := range packages {
			out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, p[0]), p[1]).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("building %s: %w\n%s", p[0], err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// Bin is the path of one of Dir's binaries.
func Bin(t testing.TB, name string) string { return filepath.Join(Dir(t), name) }

// Cleanup removes what Dir built; a package's TestMain calls it after
// m.Run.
func Cleanup() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// Main runs a package's tests and removes the binaries: func TestMain(m
// *testing.M) { os.Exit(proctest.Main(m)) }.
func Main(m *testing.M) int {
	code := m.Run()
	Cleanup()
	return code
}

// Buffer collects a child process's output; safe for concurrent use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// FreeAddr is a loopback host:port nobody listened on a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
