package policies

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testRego is a small policy whose decision depends on its data, so a data
// change changes both the hash and the behaviour.
const testRego = `package teegate.policy

default allow := false

allow if count(deny) == 0

deny contains "evidence too old" if input.age_seconds > data.max_age
`

// waitLimit bounds every wait on the watcher; a test that hits it failed.
const waitLimit = 20 * time.Second

type report struct {
	p   *Policy
	err error
}

// policyDir writes dir/p.rego and dir/p.data.json and returns the rego path.
func policyDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "p.rego")
	writeAtomic(t, path, testRego)
	writeAtomic(t, filepath.Join(dir, "p.data.json"), `{"max_age": 100}`)
	return path
}

// writeAtomic replaces a file by rename, as deployment tools do, so that
// a poll never reads it half written.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// startWatch runs w.Watch on path until the test ends and returns the
// reports and a channel that receives once per poll.
func startWatch(t *testing.T, w *Watcher, path string) (<-chan report, <-chan struct{}) {
	t.Helper()
	if w.Interval == 0 {
		w.Interval = time.Millisecond
	}
	reports := make(chan report, 16)
	polls := make(chan struct{}, 1)
	w.polled = func() {
		select {
		case polls <- struct{}{}:
		default:
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Watch(ctx, path, func(p *Policy, err error) { reports <- report{p, err} }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch returned %v", err)
		}
	})
	return reports, polls
}

func nextReport(t *testing.T, reports <-chan report) report {
	t.Helper()
	select {
	case r := <-reports:
		return r
	case <-time.After(waitLimit):
		t.Fatal("no report from the watcher")
		return report{}
	}
}

func nextPolicy(t *testing.T, reports <-chan report) *Policy {
	t.Helper()
	r := nextReport(t, reports)
	if r.err != nil || r.p == nil {
		t.Fatalf("report = %v, %v; want a policy", r.p, r.err)
	}
	return r.p
}

// noReportFor waits for n polls and fails if anything was reported.
func noReportFor(t *testing.T, n int, reports <-chan report, polls <-chan struct{}) {
	t.Helper()
	for range n {
		select {
		case r := <-reports:
			t.Fatalf("unexpected report %v, %v", r.p, r.err)
		case <-polls:
		case <-time.After(waitLimit):
			t.Fatal("watcher stopped polling")
		}
	}
	select {
	case r := <-reports:
		t.Fatalf("unexpected report %v, %v", r.p, r.err)
	default:
	}
}

func TestWatcherReloadsOnChange(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, path string)
	}{
		{"rego edited", func(t *testing.T, path string) {
			writeAtomic(t, path, testRego+"\ndeny contains \"always\" if true\n")
		}},
		{"data edited", func(t *testing.T, path string) {
			writeAtomic(t, filepath.Join(filepath.Dir(path), "p.data.json"), `{"max_age": 5}`)
		}},
		{"data file removed", func(t *testing.T, path string) {
			if err := os.Remove(filepath.Join(filepath.Dir(path), "p.data.json")); err != nil {
				t.Fatal(err)
			}
		}},
		{"data dir file added", func(t *testing.T, path string) {
			dir := filepath.Join(filepath.Dir(path), "p.data")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			writeAtomic(t, filepath.Join(dir, "extra.json"), `{"extra": [1]}`)
		}},
		{"same size, same mtime", func(t *testing.T, path string) {
			// Only the racy-mtime rule can see this rewrite.
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			edited := []byte(testRego)
			edited[len(edited)-2] = 'X' // inside the reason string
			// Set the old mtime before the rename, so no poll ever sees
			// another size or mtime.
			tmp := path + ".tmp"
			if err := os.WriteFile(tmp, edited, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(tmp, fi.ModTime(), fi.ModTime()); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := policyDir(t)
			reports, _ := startWatch(t, &Watcher{}, path)
			first := nextPolicy(t, reports)
			if first.Hash() != mustLoad(t, path).Hash() {
				t.Fatal("first report is not the policy on disk")
			}
			tt.change(t, path)
			p := nextPolicy(t, reports)
			if p.Hash() == first.Hash() {
				t.Fatal("reloaded policy has the old hash")
			}
			if p.Hash() != mustLoad(t, path).Hash() {
				t.Fatal("reloaded policy is not the policy on disk")
			}
		})
	}
}

func TestWatcherReportsLoadErrors(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(t *testing.T, path string)
		err    error
	}{
		{"rego broken", func(t *testing.T, path string) { writeAtomic(t, path, "package teegate.policy\nallow if {") }, ErrPolicyFormat},
		{"data broken", func(t *testing.T, path string) {
			writeAtomic(t, filepath.Join(filepath.Dir(path), "p.data.json"), `[1, 2]`)
		}, ErrDataFormat},
		{"rego removed", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}, fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := policyDir(t)
			orig := mustLoad(t, path)
			reports, polls := startWatch(t, &Watcher{}, path)
			nextPolicy(t, reports)
			tt.break_(t, path)
			r := nextReport(t, reports)
			if r.p != nil || !errors.Is(r.err, tt.err) {
				t.Fatalf("report = %v, %v; want error %v", r.p, r.err, tt.err)
			}
			// The same broken files are reported once, not every poll.
			noReportFor(t, 3, reports, polls)
			// Restoring the files reports the policy again.
			writeAtomic(t, path, testRego)
			writeAtomic(t, filepath.Join(filepath.Dir(path), "p.data.json"), `{"max_age": 100}`)
			if p := nextPolicy(t, reports); p.Hash() != orig.Hash() {
				t.Fatal("restored policy has another hash")
			}
		})
	}
}

func TestWatcherIgnoresUnchangedPolicy(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, path string)
	}{
		{"touched", func(t *testing.T, path string) {
			later := time.Now().Add(time.Hour)
			if err := os.Chtimes(path, later, later); err != nil {
				t.Fatal(err)
			}
		}},
		{"data reformatted", func(t *testing.T, path string) {
			writeAtomic(t, filepath.Join(filepath.Dir(path), "p.data.json"), "{\n  \"max_age\": 100\n}\n")
		}},
		{"nothing", func(*testing.T, string) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := policyDir(t)
			w := &Watcher{}
			reports, polls := startWatch(t, w, path)
			first := nextPolicy(t, reports)
			tt.change(t, path)
			noReportFor(t, 5, reports, polls)
			// A forced reload reports even an unchanged policy.
			w.Reload()
			if p := nextPolicy(t, reports); p.Hash() != first.Hash() {
				t.Fatal("forced reload changed the hash")
			}
		})
	}
}

func TestWatcherReloadBeforeWatch(t *testing.T) {
	path := policyDir(t)
	w := &Watcher{}
	w.Reload()
	w.Reload() // merged with the first
	reports, polls := startWatch(t, w, path)
	nextPolicy(t, reports)
	noReportFor(t, 3, reports, polls)
}

func TestWatcherRunsOnce(t *testing.T) {
	path := policyDir(t)
	w := &Watcher{}
	reports, _ := startWatch(t, w, path)
	nextPolicy(t, reports)
	err := w.Watch(context.Background(), path, func(*Policy, error) { t.Error("second Watch reported") })
	if !errors.Is(err, ErrWatcherRunning) {
		t.Fatalf("second Watch = %v, want ErrWatcherRunning", err)
	}
}

// TestWatcherWithHolder is the wiring a service uses: keep the previous
// policy when a reload fails.
func TestWatcherWithHolder(t *testing.T) {
	path := policyDir(t)
	h := &Holder{}
	w := &Watcher{Interval: time.Millisecond}
	reports := make(chan error, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- w.Watch(ctx, path, func(p *Policy, err error) {
			if err == nil {
				h.Set(p)
			}
			reports <- err
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	wait := func() error {
		select {
		case err := <-reports:
			return err
		case <-time.After(waitLimit):
			t.Fatal("no report")
			return nil
		}
	}
	claimsAged := simulated()
	claimsAged.AgeSeconds = 50
	evaluate := func() bool {
		allow, _, err := h.Evaluate(context.Background(), claimsAged, testNow)
		if err != nil {
			t.Fatal(err)
		}
		return allow
	}
	if err := wait(); err != nil || !evaluate() {
		t.Fatalf("initial policy: err %v, want allow", err)
	}
	writeAtomic(t, filepath.Join(filepath.Dir(path), "p.data.json"), `{"max_age": 10}`)
	if err := wait(); err != nil || evaluate() {
		t.Fatalf("tightened policy: err %v, want deny", err)
	}
	writeAtomic(t, path, "not rego")
	if err := wait(); !errors.Is(err, ErrPolicyFormat) || evaluate() {
		t.Fatalf("broken policy: err %v; the tightened policy must stay", err)
	}
}

// ExampleWatcher shows the wiring of a service: a Holder serves
// evaluations, the Watcher swaps in each good reload, and SIGHUP (handled in
// main) calls Reload.
func ExampleWatcher() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := Resolve("/etc/teegate/production.rego")
	if err != nil {
		return // refuse to start without a policy
	}
	h := NewHolder(p)
	w := &Watcher{}
	go w.Watch(ctx, "/etc/teegate/production.rego", func(p *Policy, err error) {
		if err != nil {
			return // log it; keep serving the previous policy
		}
		h.Set(p)
	})
	// On SIGHUP: w.Reload(). Admission calls h.Evaluate(ctx, claims, now).
}

func BenchmarkWatcherPoll(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(dir, "p.rego")
	old := time.Now().Add(-time.Hour) // past the racy window: stat only
	for name, content := range map[string]string{path: testRego, filepath.Join(dir, "p.data.json"): `{"max_age": 100}`} {
		if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
			b.Fatal(err)
		}
		if err := os.Chtimes(name, old, old); err != nil {
			b.Fatal(err)
		}
	}
	s := &watchState{path: path, onChange: func(*Policy, error) {}}
	s.check(true)
	b.ReportAllocs()
	for b.Loop() {
		s.check(false)
	}
}
