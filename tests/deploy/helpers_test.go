package deploy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
)

// repoRoot is the module root (this package is tests/deploy).
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod at %s: %v", root, err)
	}
	return root
}

// deployPath is a path under deploy/.
func deployPath(t testing.TB, elem ...string) string {
	return filepath.Join(append([]string{repoRoot(t), "deploy"}, elem...)...)
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binary builds the real commands once per test run and returns the path
// of name ("teegate" or "teegate-worker").
func binary(t testing.TB, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "teegate-deploy-test-")
		if buildErr != nil {
			return
		}
		for _, pkg := range []string{"./cmd/teegate", "./cmd/teegate-worker"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, filepath.Base(pkg)), pkg)
			cmd.Dir = repoRoot(t)
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, name)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// cli is one command line of the product: a binary and its subcommand
// ("teegate gateway", "teegate-worker").
type cli struct {
	bin string   // "teegate" or "teegate-worker"
	sub []string // subcommand words
}

func (c cli) String() string { return strings.Join(append([]string{c.bin}, c.sub...), " ") }

// cliOf names the command a container or unit runs from its binary path
// and the words after it.
func cliOf(t testing.TB, argv []string) (cli, []string) {
	t.Helper()
	if len(argv) == 0 {
		t.Fatal("empty command")
	}
	switch filepath.Base(argv[0]) {
	case "teegate":
		if len(argv) < 2 {
			t.Fatalf("%v: teegate without a subcommand", argv)
		}
		return cli{bin: "teegate", sub: argv[1:2]}, argv[2:]
	case "teegate-worker", "teegate-worker-vllm":
		// The vLLM entrypoint passes its arguments to teegate-worker.
		return cli{bin: "teegate-worker"}, argv[1:]
	}
	t.Fatalf("%v: not a teegate command", argv)
	return cli{}, nil
}

// flagInfo is one flag as the command's -h shows it.
type flagInfo struct {
	Bool    bool
	Default string
}

var (
	helpMu    sync.Mutex
	helpCache = map[string]map[string]flagInfo{}
	// "  -name type" or "  -name" (bool) as the flag package prints them.
	flagLine = regexp.MustCompile(`^  -([A-Za-z0-9][A-Za-z0-9_.-]*)(?: (\S+))?$`)
	defaultV = regexp.MustCompile(`\(default "?([^()]*?)"?\)$`)
)

// help runs the command with -h (and env added) and returns its output.
func help(t testing.TB, c cli, env ...string) string {
	t.Helper()
	args := append(append([]string(nil), c.sub...), "-h")
	cmd := exec.Command(binary(t, c.bin), args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s -h: %v\n%s", c, err, out.String())
	}
	return out.String()
}

// flags returns the flags c defines, read from its -h.
func flags(t testing.TB, c cli) map[string]flagInfo {
	t.Helper()
	helpMu.Lock()
	defer helpMu.Unlock()
	if f, ok := helpCache[c.String()]; ok {
		return f
	}
	fs := parseHelp(help(t, c))
	if len(fs) < 5 {
		t.Fatalf("%s -h shows only %d flags", c, len(fs))
	}
	helpCache[c.String()] = fs
	return fs
}

func parseHelp(text string) map[string]flagInfo {
	fs := map[string]flagInfo{}
	var cur string
	for _, line := range strings.Split(text, "\n") {
		if m := flagLine.FindStringSubmatch(line); m != nil {
			cur = m[1]
			fs[cur] = flagInfo{Bool: m[2] == ""}
			continue
		}
		if cur != "" && strings.HasPrefix(line, "    \t") {
			if m := defaultV.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
				fi := fs[cur]
				fi.Default = m[1]
				fs[cur] = fi
			}
		}
	}
	return fs
}

// parsedArgs are the flags of one command line, by name, last one wins;
// "NAME[]" holds every value of NAME, newline-separated (repeatable flags).
type parsedArgs map[string]string

// parseArgs checks every word of args against c's flags (-x, --x, -x=v,
// --x v) and returns them; a positional word or an unknown flag fails.
func parseArgs(t testing.TB, where string, c cli, args []string) parsedArgs {
	t.Helper()
	defined := flags(t, c)
	got := parsedArgs{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			t.Errorf("%s: %q is not a flag of %s (the command takes no positional arguments)", where, a, c)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		fi, ok := defined[name]
		if !ok {
			t.Errorf("%s: %s defines no flag -%s", where, c, name)
			continue
		}
		if !hasValue {
			if fi.Bool {
				value = "true"
			} else if i+1 < len(args) {
				i++
				value = args[i]
			} else {
				t.Errorf("%s: -%s needs a value", where, name)
			}
		}
		got[name] = value
		if all, ok := got[name+"[]"]; ok {
			got[name+"[]"] = all + "\n" + value
		} else {
			got[name+"[]"] = value
		}
	}
	return got
}

// envRead reports whether c reads the environment variable name: it runs
// c -h with name set to a sentinel and looks for it among the defaults.
func envRead(t testing.TB, c cli, name string) bool {
	t.Helper()
	sentinel := "sentinel-" + strings.ToLower(name)
	return strings.Contains(help(t, c, name+"="+sentinel), `"`+sentinel+`"`)
}

// portOf returns the port of a host:port or URL.
func portOf(t testing.TB, addr string) string {
	t.Helper()
	if i := strings.Index(addr, "://"); i >= 0 {
		addr = addr[i+3:]
	}
	addr, _, _ = strings.Cut(addr, "/")
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		t.Fatalf("%q has no port", addr)
	}
	return addr[i+1:]
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// execOut runs a command and returns its combined output.
func execOut(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
