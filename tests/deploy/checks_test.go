package deploy

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// recorder is a testing.TB that records failures instead of failing, so
// the checks themselves can be shown to fail on bad input.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	failed []string
}

func (r *recorder) Errorf(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = append(r.failed, fmt.Sprintf(format, a...))
}

func (r *recorder) Fatalf(format string, a ...any) {
	r.Errorf(format, a...)
	runtime.Goexit()
}

func (r *recorder) Fatal(a ...any) { r.Fatalf("%s", fmt.Sprint(a...)) }

func (r *recorder) Helper() {}

// fails runs check with a recorder and returns what it reported.
func fails(t *testing.T, check func(tb testing.TB)) string {
	t.Helper()
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		check(r)
	}()
	<-done
	return strings.Join(r.failed, "\n")
}

// Each check fails on the mistake it exists for.
func TestChecksCatchMistakes(t *testing.T) {
	worker := cli{bin: "teegate-worker"}
	gateway := cli{bin: "teegate", sub: []string{"gateway"}}
	for name, c := range map[string]struct {
		check func(tb testing.TB)
		want  string
	}{
		"unknown flag":  {func(tb testing.TB) { parseArgs(tb, "x", worker, []string{"--engine-urll=http://127.0.0.1:8000"}) }, "defines no flag -engine-urll"},
		"positional":    {func(tb testing.TB) { parseArgs(tb, "x", gateway, []string{"--addr", ":8080", "extra"}) }, "is not a flag"},
		"missing value": {func(tb testing.TB) { parseArgs(tb, "x", gateway, []string{"--addr"}) }, "needs a value"},
		"env not read": {func(tb testing.TB) {
			if !envRead(tb, gateway, "TEEGATE_NO_SUCH_VARIABLE") {
				tb.Errorf("not read")
			}
		}, "not read"},
		"misspelt field": {func(tb testing.TB) {
			decodeStrict(tb, "x", []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec:\n  replica: 2\n"), &objects{})
		}, "does not decode strictly"},
		"unknown kind": {func(tb testing.TB) {
			decodeStrict(tb, "x", []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"), &objects{})
		}, "no decoder"},
		"KEDA field": {func(tb testing.TB) {
			decodeStrict(tb, "x", []byte("apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: a}\nspec:\n  scaleTargetRef: {name: w}\n  minReplicas: 0\n"), &objects{})
		}, "does not decode strictly"},
		"unpinned base": {func(tb testing.TB) {
			for _, ref := range []string{"debian:bookworm-slim", "golang:latest", "golang", "localhost:5000/x"} {
				if pinned(ref) {
					tb.Errorf("%s counted as pinned", ref)
				}
			}
			if !pinned("golang:1.26.8-bookworm") || !pinned("x@sha256:ab") || !pinned("scratch") {
				tb.Errorf("pinned refs refused")
			}
			tb.Errorf("ran")
		}, "ran"},
		"build tag": {func(tb testing.TB) {
			if buildTagUsed(tb, "no_such_tag") || !buildTagUsed(tb, "ego") {
				tb.Errorf("build tags misread")
			}
			tb.Errorf("ran")
		}, "ran"},
		"image unknown": {func(tb testing.TB) { imageFor(tb, "teegate/nothing:1") }, "built by no Dockerfile"},
	} {
		t.Run(name, func(t *testing.T) {
			got := fails(t, c.check)
			if !strings.Contains(got, c.want) {
				t.Fatalf("want a failure with %q, got %q", c.want, got)
			}
			if c.want == "ran" && got != "ran" {
				t.Fatalf("unexpected failures: %s", got)
			}
		})
	}
}
