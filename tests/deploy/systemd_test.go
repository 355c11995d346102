package deploy

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/unit"
)

// unitFile reads deploy/systemd/<name> with go-systemd's parser: only the
// [Unit], [Service] and [Install] sections.
func unitFile(t testing.TB, name string) map[string][]string {
	t.Helper()
	f, err := os.Open(deployPath(t, "systemd", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	opts, err := unit.DeserializeOptions(f)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	u := map[string][]string{}
	for _, o := range opts {
		if !slices.Contains([]string{"Unit", "Service", "Install"}, o.Section) {
			t.Errorf("%s: section [%s]", name, o.Section)
		}
		u[o.Section+"."+o.Name] = append(u[o.Section+"."+o.Name], o.Value)
	}
	return u
}

// execStart splits a unit's one ExecStart into words (the units quote
// nothing, so a quote is refused rather than split wrongly).
func execStart(t testing.TB, name string, u map[string][]string) []string {
	t.Helper()
	v := u["Service.ExecStart"]
	if len(v) != 1 {
		t.Fatalf("%s: want one ExecStart, got %d", name, len(v))
	}
	if strings.ContainsAny(v[0], `"'\`) {
		t.Fatalf("%s: ExecStart with quotes; extend this test's splitting", name)
	}
	return strings.Fields(v[0])
}

// The worker unit runs teegate-worker with flags it has, on vLLM's port
// (--engine openai), after vllm.service; its EnvironmentFile sets only
// variables teegate-worker reads.
func TestSystemdUnits(t *testing.T) {
	vllm := unitFile(t, "vllm.service")
	vargs := execStart(t, "vllm.service", vllm)
	if filepath.Base(vargs[0]) != "vllm" || vargs[1] != "serve" {
		t.Fatalf("vllm.service runs %v", vargs)
	}
	vport := ""
	for i, a := range vargs {
		if a == "--port" && i+1 < len(vargs) {
			vport = vargs[i+1]
		}
		if a == "--host" && i+1 < len(vargs) && vargs[i+1] != "127.0.0.1" {
			t.Errorf("vllm.service listens on %s: keep it on loopback, inside the VM", vargs[i+1])
		}
	}
	if vport == "" {
		t.Fatal("vllm.service names no --port")
	}

	w := unitFile(t, "teegate-worker.service")
	argv := execStart(t, "teegate-worker.service", w)
	if argv[0] != "/usr/local/bin/teegate-worker" {
		t.Errorf("teegate-worker.service runs %s", argv[0])
	}
	c, args := cliOf(t, argv)
	got := parseArgs(t, "teegate-worker.service", c, args)
	if got["engine"] != "openai" || portOf(t, got["engine-url"]) != vport {
		t.Errorf("teegate-worker.service: --engine %q --engine-url %q; vLLM listens on %s", got["engine"], got["engine-url"], vport)
	}
	for _, dep := range []string{"Unit.After", "Unit.Wants"} {
		if !strings.Contains(strings.Join(w[dep], " "), "vllm.service") {
			t.Errorf("teegate-worker.service: %s does not name vllm.service", dep)
		}
	}
	envFiles := w["Service.EnvironmentFile"]
	if len(envFiles) != 1 || filepath.Base(envFiles[0]) != "worker.env" {
		t.Fatalf("teegate-worker.service: EnvironmentFile %v, want .../worker.env", envFiles)
	}
	f, err := os.Open(deployPath(t, "systemd", "worker.env"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, _, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("worker.env: %q is not NAME=value", line)
			continue
		}
		n++
		if !envRead(t, c, name) {
			t.Errorf("worker.env sets %s, which teegate-worker does not read", name)
		}
	}
	if n == 0 {
		t.Error("worker.env sets nothing")
	}
}
