package deploy

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// stage is one build stage of a Dockerfile.
type stage struct {
	name, from string
	// outputs are the -o paths of the go builds run in it; copied the
	// destinations COPY wrote.
	outputs, copied map[string]bool
	entrypoint      []string
	cmd             []string
	user            string
	expose          []string
}

// dockerfile is one parsed Dockerfile.
type dockerfile struct {
	path   string
	args   map[string]string // ARG defaults before the first FROM
	stages []*stage
}

func (d *dockerfile) stage(name string) *stage {
	for _, s := range d.stages {
		if s.name == name {
			return s
		}
	}
	return nil
}

var (
	goBuild  = regexp.MustCompile(`(?:^|&&|;|\s)(?:ego-go|go) build\s([^&;]*)`)
	outFlag  = regexp.MustCompile(`-o\s+(\S+)`)
	pkgArg   = regexp.MustCompile(`\s(\./cmd/[A-Za-z0-9_-]+)`)
	tagsFlag = regexp.MustCompile(`-tags[ =](\S+)`)
)

// parseDockerfile parses deploy/docker/<name> with BuildKit's parser and
// checks what can be checked without an engine: multi-stage; bases pinned
// by tag (never latest) or digest; go builds of packages that exist, with
// build tags the code has; COPY sources that exist (in the repository, or
// as an earlier stage's build output); a non-root USER in every runnable
// stage; an exec-form ENTRYPOINT whose binary the stage holds.
func parseDockerfile(t testing.TB, name string) *dockerfile {
	t.Helper()
	p := deployPath(t, "docker", name)
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	res, err := parser.Parse(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	d := &dockerfile{path: p, args: map[string]string{}}
	var cur *stage
	stageArgs := map[string]string{}
	expand := func(s string) string {
		return os.Expand(s, func(k string) string {
			if v, ok := stageArgs[k]; ok {
				return v
			}
			return d.args[k]
		})
	}
	for _, n := range res.AST.Children {
		var words []string
		for a := n.Next; a != nil; a = a.Next {
			words = append(words, a.Value)
		}
		where := p + ": " + n.Original
		switch strings.ToLower(n.Value) {
		case "arg":
			for _, w := range words {
				k, v, _ := strings.Cut(w, "=")
				if cur == nil {
					d.args[k] = v
				} else {
					stageArgs[k] = v
				}
			}
		case "from":
			if len(words) == 3 && strings.EqualFold(words[1], "as") {
				cur = &stage{name: words[2]}
			} else if len(words) == 1 {
				cur = &stage{}
			} else {
				t.Fatalf("%s: unexpected FROM", where)
			}
			cur.from = expand(words[0])
			cur.outputs, cur.copied = map[string]bool{}, map[string]bool{}
			stageArgs = map[string]string{}
			if d.stage(cur.from) == nil && !pinned(cur.from) {
				t.Errorf("%s: base %q is not pinned by a version tag or digest", where, cur.from)
			}
			d.stages = append(d.stages, cur)
		case "run":
			cmd := strings.Join(words, " ")
			for _, m := range goBuild.FindAllStringSubmatch(cmd, -1) {
				o := outFlag.FindStringSubmatch(m[1])
				pkg := pkgArg.FindStringSubmatch(" " + m[1])
				if o == nil || pkg == nil {
					t.Errorf("%s: a go build needs -o and a ./cmd/ package", where)
					continue
				}
				if _, err := os.Stat(filepath.Join(repoRoot(t), pkg[1], "main.go")); err != nil {
					t.Errorf("%s: package %s has no main.go", where, pkg[1])
				}
				if tags := tagsFlag.FindStringSubmatch(m[1]); tags != nil {
					for _, tag := range strings.Split(tags[1], ",") {
						if !buildTagUsed(t, tag) {
							t.Errorf("%s: no file of the repository is built under tag %q", where, tag)
						}
					}
				}
				out := o[1]
				if !filepath.IsAbs(out) {
					out = "/src/" + out // WORKDIR of every build stage
				}
				cur.outputs[filepath.Clean(out)] = true
			}
		case "copy":
			if len(words) < 2 {
				t.Fatalf("%s: COPY needs a source and a destination", where)
			}
			from := ""
			for _, f := range n.Flags {
				if v, ok := strings.CutPrefix(f, "--from="); ok {
					from = v
				}
			}
			dst := words[len(words)-1]
			for _, src := range words[:len(words)-1] {
				switch {
				case from != "":
					s := d.stage(from)
					if s == nil {
						t.Errorf("%s: no stage %s", where, from)
					} else if !s.outputs[filepath.Clean(src)] && !baseFiles[src] {
						t.Errorf("%s: stage %s builds no %s", where, from, src)
					}
				case src == ".":
				default:
					if _, err := os.Stat(filepath.Join(repoRoot(t), src)); err != nil {
						t.Errorf("%s: %s is not in the repository", where, src)
					}
				}
				if strings.HasSuffix(dst, "/") {
					cur.copied[dst+filepath.Base(src)] = true
				} else {
					cur.copied[dst] = true
				}
			}
		case "user":
			cur.user = words[0]
		case "expose":
			cur.expose = append(cur.expose, words...)
		case "entrypoint", "cmd":
			if !n.Attributes["json"] {
				t.Errorf("%s: use the exec (JSON) form, so signals reach the process", where)
			}
			if strings.EqualFold(n.Value, "entrypoint") {
				cur.entrypoint = words
			} else {
				cur.cmd = words
			}
		}
	}
	if len(d.stages) < 2 {
		t.Errorf("%s: not multi-stage", p)
	}
	for _, s := range d.stages {
		if len(s.entrypoint) == 0 {
			continue
		}
		if u, _, _ := strings.Cut(s.user, ":"); u == "" || u == "0" || u == "root" {
			t.Errorf("%s: stage %q runs as %q, not a non-root user", p, s.name, s.user)
		}
		bin := s.entrypoint[0]
		if bin == "ego" { // EGo's runner from the ego-deploy base: it runs the signed binary
			if len(s.entrypoint) < 3 || s.entrypoint[1] != "run" {
				t.Errorf("%s: ego entrypoint must be ego run BINARY", p)
				continue
			}
			bin = s.entrypoint[2]
		}
		if !s.copied[bin] {
			t.Errorf("%s: stage %q runs %s, which it does not COPY in", p, s.name, bin)
		}
	}
	return d
}

// baseFiles are files the build images have that a runtime stage copies.
var baseFiles = map[string]bool{"/etc/ssl/certs/ca-certificates.crt": true}

// pinned reports whether an image reference names a digest or a version tag.
func pinned(ref string) bool {
	if ref == "scratch" || strings.Contains(ref, "@sha256:") {
		return true
	}
	i := strings.LastIndex(ref, ":")
	if i < 0 || strings.Contains(ref[i:], "/") {
		return false
	}
	tag := ref[i+1:]
	return tag != "latest" && regexp.MustCompile(`[0-9]`).MatchString(tag)
}

// buildTagUsed reports whether some Go file has tag in its //go:build line.
func buildTagUsed(t testing.TB, tag string) bool {
	t.Helper()
	word := regexp.MustCompile(`^//go:build .*\b` + regexp.QuoteMeta(tag) + `\b`)
	found := false
	_ = filepath.WalkDir(repoRoot(t), func(p string, de os.DirEntry, err error) error {
		if err != nil || found {
			return err
		}
		if de.IsDir() && (de.Name() == ".git" || de.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(p, ".go") {
			b, _ := os.ReadFile(p)
			line, _, _ := bytes.Cut(b, []byte("\n"))
			found = word.Match(line)
		}
		return nil
	})
	return found
}

// image is what a container of a teegate image runs.
type image struct {
	entrypoint, cmd, expose []string
	copied                  map[string]bool
}

// images maps the image names the manifests use to the Dockerfile and
// stage ("" = the last) that build them.
var images = map[string][2]string{
	"teegate/gateway":     {"gateway.Dockerfile", ""},
	"teegate/worker":      {"worker.Dockerfile", "worker"},
	"teegate/worker-vllm": {"worker.Dockerfile", "worker-vllm"},
	"teegate/worker-sgx":  {"worker-sgx.Dockerfile", ""},
}

func imageFor(t testing.TB, ref string) image {
	t.Helper()
	name, _, _ := strings.Cut(ref, "@")
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name = name[:i]
	}
	src, ok := images[name]
	if !ok {
		t.Fatalf("image %s is built by no Dockerfile in deploy/docker", ref)
	}
	d := parseDockerfile(t, src[0])
	s := d.stages[len(d.stages)-1]
	if src[1] != "" {
		s = d.stage(src[1])
	}
	if s == nil {
		t.Fatalf("%s has no stage %s", src[0], src[1])
	}
	return image{entrypoint: s.entrypoint, cmd: s.cmd, expose: s.expose, copied: s.copied}
}

// Each Dockerfile passes the checks parseDockerfile makes, and the command
// each image runs by default has only flags the real CLI defines.
func TestDockerfiles(t *testing.T) {
	for name, src := range images {
		img := imageFor(t, name)
		argv := append(append([]string(nil), img.entrypoint...), img.cmd...)
		if argv[0] == "ego" {
			argv = argv[2:]
		}
		c, args := cliOf(t, argv)
		got := parseArgs(t, src[0]+" "+name, c, args)
		// A listening image exposes the port its default command listens
		// on, the code's default port.
		if addr, ok := got["addr"]; ok {
			def := portOf(t, flags(t, c)["addr"].Default)
			if portOf(t, addr) != def || len(img.expose) != 1 || strings.TrimSuffix(img.expose[0], "/tcp") != def {
				t.Errorf("%s: --addr %s and EXPOSE %v must be the default port %s", src[0], addr, img.expose, def)
			}
		}
	}
	// The SGX image's EGo is the version go.mod pins for the ego module.
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/edgelesssys/ego (v\S+)`).FindSubmatch(raw)
	g := regexp.MustCompile(`(?m)^go (\S+)`).FindSubmatch(raw)
	if m == nil || g == nil {
		t.Fatal("go.mod names no go version or no ego module")
	}
	ego, goVersion := string(m[1]), string(g[1])
	if got := "v" + parseDockerfile(t, "worker-sgx.Dockerfile").args["EGO_VERSION"]; got != ego {
		t.Errorf("worker-sgx.Dockerfile uses EGo %s, go.mod pins %s", got, ego)
	}
	// The Go image is the Go go.mod asks for.
	for _, f := range []string{"gateway.Dockerfile", "worker.Dockerfile"} {
		img := parseDockerfile(t, f).args["GO_IMAGE"]
		if !strings.HasPrefix(img, "golang:") || !goAtLeast(strings.TrimPrefix(strings.SplitN(img, "-", 2)[0], "golang:"), goVersion) {
			t.Errorf("%s: GO_IMAGE %s is older than go.mod's go %s", f, img, goVersion)
		}
	}
}

// goAtLeast compares dotted Go versions.
func goAtLeast(have, want string) bool {
	h, w := strings.Split(have, "."), strings.Split(want, ".")
	for i := range max(len(h), len(w)) {
		var a, b int
		if i < len(h) {
			a = atoi(h[i])
		}
		if i < len(w) {
			b = atoi(w[i])
		}
		if a != b {
			return a > b
		}
	}
	return true
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}
