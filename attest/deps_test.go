package attest_test

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// sdkPackages are what SDK users import: they must build without cgo and
// link nothing that acts at init (STYLE.md #13).
var sdkPackages = []string{
	"github.com/teegate/teegate/attest",
	"github.com/teegate/teegate/attest/client",
	"github.com/teegate/teegate/policies",
}

// forbiddenDeps are packages the SDK must not link, with the reason.
var forbiddenDeps = map[string]string{
	"flag":                                  "registering or parsing flags is the application's business; only cmd/ wires flags",
	"github.com/google/go-sev-guest/verify": "registers -workaround_kds_productname on flag.CommandLine at init",
	"github.com/google/go-sev-guest/validate":       "imports go-sev-guest/verify (global flag)",
	"github.com/google/go-sev-guest/verify/trust":   "parses embedded roots at init and fetches from AMD KDS; attest/snp embeds its own copies",
	"github.com/google/go-sev-guest/testing":        "test doubles; registers -product and -product_name flags",
	"github.com/google/go-sev-guest/client":         "talks to /dev/sev-guest; producers live in enclave/",
	"github.com/google/go-tdx-guest/verify":         "registers flags at init and prints to stdout",
	"github.com/google/go-tdx-guest/client":         "talks to the TDX device; producers live in enclave/",
	"github.com/golang/glog":                        "registers -v, -logtostderr … on flag.CommandLine",
	"k8s.io/klog":                                   "registers flags and reads the environment",
	"k8s.io/klog/v2":                                "registers flags and reads the environment",
	"github.com/spf13/viper":                        "configuration from the environment",
	"github.com/kelseyhightower/envconfig":          "configuration from the environment",
	"github.com/NVIDIA/go-nvml/pkg/nvml":            "cgo and dlopen of the NVIDIA driver",
	"github.com/edgelesssys/ego/enclave":            "cgo, enclave-only",
	"github.com/teegate/teegate/enclave/sim":        "simulated TEE (dev only)",
	"github.com/teegate/teegate/enclave/sim/simgpu": "simulated GPU (dev only)",
	"github.com/teegate/teegate/enclave/sim/simtdx": "simulated TDX (dev only)",
}

// envAtInitAllowed are the known, reviewed environment reads at init in
// linked packages, with the reason each is tolerated.
var envAtInitAllowed = map[string]string{
	// Linked through OPA's bundle format and go-sev-guest's report proto.
	// GOPROTODEBUG=nolazy only turns lazy decoding of protobuf messages off;
	// no verification outcome depends on it.
	"google.golang.org/protobuf/internal/impl": "GOPROTODEBUG debugging switch of the protobuf runtime",
}

type listedPackage struct {
	ImportPath string
	Dir        string
	Standard   bool
	GoFiles    []string
	CgoFiles   []string
	Imports    []string
	Error      *struct{ Err string }
}

// listDeps runs go list -deps -json with CGO_ENABLED=0.
func listDeps(t *testing.T) []listedPackage {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-deps", "-json=ImportPath,Dir,Standard,GoFiles,CgoFiles,Imports,Error"}, sdkPackages...)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list with CGO_ENABLED=0: %v", err)
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p listedPackage
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// TestSDKDependencies: attest, attest/client and policies build with
// CGO_ENABLED=0, link none of forbiddenDeps, and no package they link
// (outside the standard library) reads the environment in an init function
// or a package-level variable initializer.
func TestSDKDependencies(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go tool")
	}
	pkgs := listDeps(t)
	for _, p := range pkgs {
		if p.Error != nil {
			t.Errorf("%s does not build with CGO_ENABLED=0: %s", p.ImportPath, p.Error.Err)
		}
		if len(p.CgoFiles) > 0 {
			t.Errorf("%s needs cgo", p.ImportPath)
		}
		if why, bad := forbiddenDeps[p.ImportPath]; bad {
			t.Errorf("the SDK links %s: %s (imported by %s)", p.ImportPath, why, importers(pkgs, p.ImportPath))
		}
		if _, ok := envAtInitAllowed[p.ImportPath]; p.Standard || ok {
			continue
		}
		for _, f := range p.GoFiles {
			for _, where := range envAtInit(t, filepath.Join(p.Dir, f)) {
				t.Errorf("%s reads the environment at init: %s", p.ImportPath, where)
			}
		}
	}
}

func importers(pkgs []listedPackage, path string) string {
	var by []string
	for _, p := range pkgs {
		for _, i := range p.Imports {
			if i == path {
				by = append(by, p.ImportPath)
			}
		}
	}
	return strings.Join(by, ", ")
}

// envCalls are the os functions that read the environment.
var envCalls = map[string]bool{"Getenv": true, "LookupEnv": true, "Environ": true, "ExpandEnv": true}

// envAtInit lists calls of os.Getenv & co. inside func init() bodies and
// package-level var initializers of one file (positions as file:line).
func envAtInit(t *testing.T, path string) []string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatalf("parsing %s: %v", path, err)
	}
	osName := ""
	for _, imp := range f.Imports {
		if imp.Path.Value == `"os"` {
			osName = "os"
			if imp.Name != nil {
				osName = imp.Name.Name
			}
		}
	}
	if osName == "" {
		return nil
	}
	var found []string
	scan := func(n ast.Node) {
		ast.Inspect(n, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if id, ok := sel.X.(*ast.Ident); ok && id.Name == osName && envCalls[sel.Sel.Name] {
				found = append(found, fset.Position(call.Pos()).String())
			}
			return true
		})
	}
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			if d.Name.Name == "init" && d.Recv == nil {
				scan(d.Body)
			}
		case *ast.GenDecl:
			if d.Tok == token.VAR {
				for _, s := range d.Specs {
					for _, v := range s.(*ast.ValueSpec).Values {
						// A function literal assigned to a variable runs
						// when called, not at init.
						if _, lit := v.(*ast.FuncLit); !lit {
							scan(v)
						}
					}
				}
			}
		}
	}
	return found
}

// TestSDKRegistersNoFlags builds a program importing the SDK packages and
// runs it: flag.CommandLine must be empty after their initialization. (A
// test binary cannot check this itself: the testing package registers its
// own -test.* flags.)
func TestSDKRegistersNoFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a program")
	}
	bin := filepath.Join(t.TempDir(), "initcheck")
	build := exec.Command("go", "build", "-o", bin, "./testdata/initcheck")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building initcheck: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "no flags" {
		t.Fatalf("initcheck: %v\n%s", err, out)
	}
}

// TestEnvAtInitDetects keeps the detector honest: reads in init and in
// variable initializers are found, reads inside functions are not.
func TestEnvAtInitDetects(t *testing.T) {
	src := `package p

import xos "os"

var a = xos.Getenv("A")

var b = func() string { return xos.Getenv("B") }

func init() { _, _ = xos.LookupEnv("C") }

func f() string { return xos.Getenv("D") }
`
	path := filepath.Join(t.TempDir(), "p.go")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	got := envAtInit(t, path)
	if len(got) != 2 || !strings.HasSuffix(got[0], ":5:9") || !strings.HasSuffix(got[1], ":9:22") {
		t.Fatalf("found %v, want the var initializer (line 5) and init (line 9)", got)
	}
}
