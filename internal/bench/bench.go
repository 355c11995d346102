package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"text/tabwriter"
	"time"
)

// Config sizes a run. Quick and Full are the two shipped sizes.
type Config struct {
	// Rates are the open-loop request rates (requests/s), each run for
	// Duration against every target. The first is the headline rate.
	Rates    []int
	Duration time.Duration
	// PeakConns requests are kept in flight for PeakDuration to find each
	// target's peak throughput.
	PeakConns    int
	PeakDuration time.Duration
	// TTFTSamples streamed requests per target, one at a time.
	TTFTSamples int
	// OverloadFactor times the stack's measured peak is offered for
	// OverloadDuration in an open loop (0 duration skips the run), each
	// request given OverloadTimeout to be answered.
	OverloadFactor   float64
	OverloadDuration time.Duration
	OverloadTimeout  time.Duration
	// Streams are held open at once to measure memory per stream; 0 skips.
	Streams int
	// StreamServer starts the stack that holds the streams, ideally in a
	// process of its own (StartChild) so that only its memory is counted
	// and the client's file descriptors do not share its limit; nil runs
	// it in this process.
	StreamServer func(ctx context.Context, streams int) (StreamServer, error)
	// CPUProfile, when set, receives a CPU profile taken while the stack
	// (openai engine) runs at its peak.
	CPUProfile io.Writer
	// Log receives progress lines; nil discards them.
	Log io.Writer
	// Commit names the code measured.
	Commit string
}

// Quick finishes in well under a minute on two cores.
func Quick() Config {
	return Config{Rates: []int{1000}, Duration: 3 * time.Second, PeakConns: 64, PeakDuration: 3 * time.Second,
		TTFTSamples: 200, Streams: 5000, OverloadFactor: 2, OverloadDuration: 3 * time.Second, OverloadTimeout: 10 * time.Second}
}

// Full is the run whose numbers go in docs/PERFORMANCE.md.
func Full() Config {
	return Config{Rates: []int{1000, 500, 2000}, Duration: 10 * time.Second, PeakConns: 64, PeakDuration: 10 * time.Second,
		TTFTSamples: 1000, Streams: 10000, OverloadFactor: 2, OverloadDuration: 10 * time.Second, OverloadTimeout: 10 * time.Second}
}

func (c Config) validate() error {
	if len(c.Rates) == 0 || c.Duration <= 0 || c.PeakConns <= 0 || c.PeakDuration <= 0 || c.TTFTSamples <= 0 || c.Streams < 0 {
		return errors.New("bench config: rates, durations, peak connections and TTFT samples must be positive")
	}
	if c.OverloadDuration < 0 || c.OverloadDuration > 0 && (c.OverloadFactor <= 0 || c.OverloadTimeout <= 0) {
		return errors.New("bench config: the overload run needs a positive factor and timeout")
	}
	for _, r := range c.Rates {
		if r <= 0 {
			return errors.New("bench config: rates must be positive")
		}
	}
	return nil
}

// Machine describes where a run happened.
type Machine struct {
	Cores    int    `json:"cores"`
	CPUModel string `json:"cpu_model"`
	Go       string `json:"go"`
	OS       string `json:"os"`
	// LoadAvg is /proc/loadavg's first three fields at the start and end
	// of the run: other work on the machine skews every number.
	LoadStart string `json:"load_start"`
	LoadEnd   string `json:"load_end"`
}

// RateRun is one open-loop rate against every target.
type RateRun struct {
	Rate    int     `json:"rate"`
	Direct  Latency `json:"direct"`
	Stack   Latency `json:"stack"`
	Builtin Latency `json:"builtin"`
	// AddedP50Ms and AddedP99Ms are stack minus direct.
	AddedP50Ms float64 `json:"added_p50_ms"`
	AddedP99Ms float64 `json:"added_p99_ms"`
}

// Peak is the closed-loop run.
type Peak struct {
	Conns   int     `json:"conns"`
	Direct  Latency `json:"direct"`
	Stack   Latency `json:"stack"`
	Builtin Latency `json:"builtin"`
}

// TTFTRun is the time-to-first-token run.
type TTFTRun struct {
	Direct  TTFT `json:"direct"`
	Stack   TTFT `json:"stack"`
	Builtin TTFT `json:"builtin"`
}

// Report is one run's result. The flat fields are the headline numbers:
// the first rate's added latency, peaks, TTFT overhead, memory per stream,
// and every error of every phase.
type Report struct {
	Commit  string  `json:"commit"`
	Machine Machine `json:"machine"`
	Started string  `json:"started"`
	Seconds float64 `json:"seconds"`

	DirectRPS             float64 `json:"direct_rps"`
	StackRPS              float64 `json:"stack_rps"`
	BuiltinRPS            float64 `json:"builtin_rps"`
	PeakRatio             float64 `json:"peak_ratio"`
	BuiltinPeakRatio      float64 `json:"builtin_peak_ratio"`
	Rate                  int     `json:"rate"`
	AddedP50Ms            float64 `json:"added_p50_ms"`
	AddedP99Ms            float64 `json:"added_p99_ms"`
	AddedP999Ms           float64 `json:"added_p999_ms"`
	TTFTAddedP50Ms        float64 `json:"ttft_added_p50_ms"`
	TTFTBuiltinAddedP50Ms float64 `json:"ttft_builtin_added_p50_ms"`
	StreamRSSKiBPerStream float64 `json:"stream_rss_kib_per_stream"`
	StreamsOpen           int     `json:"streams_open"`
	// The overload run's headline (stack, openai engine): goodput as a
	// fraction of the peak, refusals, their p99 latency, timeouts.
	OverloadGoodputRatio float64           `json:"overload_goodput_ratio"`
	OverloadRefused      int               `json:"overload_refused"`
	OverloadRefusedP99Ms float64           `json:"overload_refused_p99_ms"`
	OverloadTimeouts     int               `json:"overload_timeouts"`
	Errors               int               `json:"errors"`
	Rates                []RateRun         `json:"rates"`
	Peak                 Peak              `json:"peak"`
	TTFT                 TTFTRun           `json:"ttft"`
	Overload             *Overload         `json:"overload,omitempty"`
	Streams              *Streams          `json:"streams,omitempty"`
	Targets              map[string]string `json:"targets"`
}

// loadConcurrency is each load-run worker's max_concurrency: a worker's
// real bound on this machine's cores, not a number so large that the
// gateway's overload limits (derived from the registry's capacity plus the
// cold-start queue) could never engage. Requests beyond it wait in the
// gateway for a slot (or, in the overload run, are refused).
const loadConcurrency = 128

const chatBody = `{"model":%q,"messages":[{"role":"user","content":"Tell me about lighthouses."}],"max_tokens":16%s}`

// Run measures: it starts the upstream and the stack, drives them, stops
// them, then holds the streams open.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	logw := cfg.Log
	if logw == nil {
		logw = io.Discard
	}
	logf := func(format string, a ...any) { fmt.Fprintf(logw, "bench: "+format+"\n", a...) }
	start := time.Now()
	rep := &Report{Commit: cfg.Commit, Machine: machine(), Started: start.UTC().Format(time.RFC3339)}

	up, err := StartUpstream()
	if err != nil {
		return nil, err
	}
	defer up.Close()
	engines, err := loadEngines(up.URL)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "teegate-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	logf("starting the stack (embedded NATS, gateway, 2 simulated-TEE workers, receipts on)")
	st, err := startStack(ctx, dir, engines, loadConcurrency)
	if err != nil {
		return nil, err
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = st.Close()
		}
	}
	defer stop()

	hdr := http.Header{"Content-Type": {"application/json"}}
	auth := hdr.Clone()
	auth.Set("Authorization", "Bearer "+st.key)
	target := func(name, base, model, extra string, h http.Header) Target {
		return Target{Name: name, URL: base + "/v1/chat/completions", Body: fmt.Appendf(nil, chatBody, model, extra), Header: h}
	}
	direct := target("direct", up.URL, UpstreamModel, "", hdr)
	stackT := target("stack", st.st.URL, UpstreamModel, "", auth)
	builtinT := target("builtin", st.st.URL, BuiltinModel, "", auth)
	rep.Targets = map[string]string{
		"direct":  "POST " + direct.URL + " (zero-latency upstream, net/http)",
		"stack":   "POST " + stackT.URL + " model " + UpstreamModel + " (gateway → NATS → worker → openai engine → upstream; receipts on)",
		"builtin": "POST " + builtinT.URL + " model " + BuiltinModel + " (gateway → NATS → worker → builtin engine, no latency; receipts on)",
	}
	all := []Target{direct, stackT, builtinT}

	logf("warming up")
	for _, t := range all {
		if l := openLoop(t, 200, 500*time.Millisecond); l.Errors > 0 {
			return nil, fmt.Errorf("warming up %s: %d errors, first: %s", t.Name, l.Errors, l.FirstError)
		}
	}
	for _, rate := range cfg.Rates {
		logf("open loop at %d req/s for %s each", rate, cfg.Duration)
		r := RateRun{Rate: rate}
		r.Direct = openLoop(direct, rate, cfg.Duration)
		r.Stack = openLoop(stackT, rate, cfg.Duration)
		r.Builtin = openLoop(builtinT, rate, cfg.Duration)
		r.AddedP50Ms = round(r.Stack.P50Ms-r.Direct.P50Ms, 3)
		r.AddedP99Ms = round(r.Stack.P99Ms-r.Direct.P99Ms, 3)
		rep.Errors += r.Direct.Errors + r.Stack.Errors + r.Builtin.Errors
		rep.Rates = append(rep.Rates, r)
	}
	logf("closed loop, %d connections, %s each", cfg.PeakConns, cfg.PeakDuration)
	rep.Peak.Conns = cfg.PeakConns
	rep.Peak.Direct = closedLoop(direct, cfg.PeakConns, cfg.PeakDuration)
	if cfg.CPUProfile != nil {
		if err := pprof.StartCPUProfile(cfg.CPUProfile); err != nil {
			return nil, fmt.Errorf("starting the CPU profile: %w", err)
		}
	}
	rep.Peak.Stack = closedLoop(stackT, cfg.PeakConns, cfg.PeakDuration)
	if cfg.CPUProfile != nil {
		pprof.StopCPUProfile()
	}
	rep.Peak.Builtin = closedLoop(builtinT, cfg.PeakConns, cfg.PeakDuration)
	rep.Errors += rep.Peak.Direct.Errors + rep.Peak.Stack.Errors + rep.Peak.Builtin.Errors

	if cfg.OverloadDuration > 0 {
		// Refusals and timeouts are what the run measures, not errors of
		// the harness: they are reported on their own.
		logf("overload: %.1f× the stack's peak (%.0f req/s) for %s", cfg.OverloadFactor, rep.Peak.Stack.RPS, cfg.OverloadDuration)
		if rep.Peak.Stack.RPS <= 0 {
			return nil, errNoPeak
		}
		o := overload(stackT, rep.Peak.Stack.RPS, cfg.OverloadFactor, cfg.OverloadDuration, cfg.OverloadTimeout)
		rep.Overload = &o
		rep.OverloadGoodputRatio, rep.OverloadRefused = o.GoodputPeak, o.Refused
		rep.OverloadRefusedP99Ms, rep.OverloadTimeouts = o.RefusedP99Ms, o.Timeouts
	}

	logf("time to first token, %d streams each, one at a time", cfg.TTFTSamples)
	stream := `,"stream":true`
	tt := measureTTFT([]Target{
		target("direct", up.URL, UpstreamModel, stream, hdr),
		target("stack", st.st.URL, UpstreamModel, stream, auth),
		target("builtin", st.st.URL, BuiltinModel, stream, auth),
	}, cfg.TTFTSamples)
	rep.TTFT = TTFTRun{Direct: tt[0], Stack: tt[1], Builtin: tt[2]}
	for _, t := range tt {
		rep.Errors += t.Errors
	}
	stop()

	if cfg.Streams > 0 {
		logf("holding %d streams open", cfg.Streams)
		s, err := runStreams(ctx, cfg)
		if err != nil {
			return nil, err
		}
		rep.Streams = &s
		rep.Errors += s.Errors
		rep.StreamRSSKiBPerStream = s.RSSKiBPerStream
		rep.StreamsOpen = s.Open
	}

	h := rep.Rates[0]
	rep.Rate = h.Rate
	rep.AddedP50Ms, rep.AddedP99Ms = h.AddedP50Ms, h.AddedP99Ms
	rep.AddedP999Ms = round(h.Stack.P999Ms-h.Direct.P999Ms, 3)
	rep.DirectRPS, rep.StackRPS, rep.BuiltinRPS = rep.Peak.Direct.RPS, rep.Peak.Stack.RPS, rep.Peak.Builtin.RPS
	if rep.DirectRPS > 0 {
		rep.PeakRatio = round(rep.StackRPS/rep.DirectRPS, 3)
		rep.BuiltinPeakRatio = round(rep.BuiltinRPS/rep.DirectRPS, 3)
	}
	rep.TTFTAddedP50Ms = round(rep.TTFT.Stack.P50Ms-rep.TTFT.Direct.P50Ms, 3)
	rep.TTFTBuiltinAddedP50Ms = round(rep.TTFT.Builtin.P50Ms-rep.TTFT.Direct.P50Ms, 3)
	rep.Machine.LoadEnd = loadAvg()
	rep.Seconds = round(time.Since(start).Seconds(), 1)
	return rep, nil
}

func runStreams(ctx context.Context, cfg Config) (Streams, error) {
	var (
		srv     StreamServer
		err     error
		cleanup = func() {}
		process = "child"
	)
	if cfg.StreamServer != nil {
		srv, err = cfg.StreamServer(ctx, cfg.Streams)
	} else {
		process = "self"
		srv, cleanup, err = inProcessStreams(ctx, cfg.Streams)
	}
	if err != nil {
		return Streams{}, fmt.Errorf("starting the stream server: %w", err)
	}
	defer cleanup()
	s := holdStreams(ctx, srv, cfg.Streams, 32)
	s.Process = process
	if err := srv.Close(); err != nil && s.FirstError == "" {
		s.FirstError = "closing the stream server: " + err.Error()
	}
	return s, nil
}

func machine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH, LoadStart: loadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if m.CPUModel == "" {
		m.CPUModel = "unknown"
	}
	return m
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// WriteText writes the report as side-by-side tables.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(format string, a ...any) { fmt.Fprintf(tw, format+"\n", a...) }
	p("teegate bench  commit %s  %d cores, %s  %s  load %s → %s  (%.0f s)", r.Commit, r.Machine.Cores, r.Machine.CPUModel,
		r.Machine.Go, r.Machine.LoadStart, r.Machine.LoadEnd, r.Seconds)
	p("")
	p("open loop\trate\ttarget\tok rps\tp50 ms\tp99 ms\tp999 ms\terrors\tadded p50 / p99 ms")
	for _, x := range r.Rates {
		p("\t%d\tdirect\t%.0f\t%.3f\t%.3f\t%.3f\t%d\t", x.Rate, x.Direct.RPS, x.Direct.P50Ms, x.Direct.P99Ms, x.Direct.P999Ms, x.Direct.Errors)
		p("\t\tstack (openai)\t%.0f\t%.3f\t%.3f\t%.3f\t%d\t%+.3f / %+.3f", x.Stack.RPS, x.Stack.P50Ms, x.Stack.P99Ms, x.Stack.P999Ms, x.Stack.Errors, x.AddedP50Ms, x.AddedP99Ms)
		p("\t\tstack (builtin)\t%.0f\t%.3f\t%.3f\t%.3f\t%d\t%+.3f / %+.3f", x.Builtin.RPS, x.Builtin.P50Ms, x.Builtin.P99Ms, x.Builtin.P999Ms, x.Builtin.Errors,
			x.Builtin.P50Ms-x.Direct.P50Ms, x.Builtin.P99Ms-x.Direct.P99Ms)
	}
	p("")
	p("peak\tconns\ttarget\tok rps\tp50 ms\tp99 ms\tp999 ms\terrors\tratio to direct")
	pk := r.Peak
	p("\t%d\tdirect\t%.0f\t%.3f\t%.3f\t%.3f\t%d\t1.00", pk.Conns, pk.Direct.RPS, pk.Direct.P50Ms, pk.Direct.P99Ms, pk.Direct.P999Ms, pk.Direct.Errors)
	p("\t\tstack (openai)\t%.0f\t%.3f\t%.3f\t%.3f\t%d\t%.2f", pk.Stack.RPS, pk.Stack.P50Ms, pk.Stack.P99Ms, pk.Stack.P999Ms, pk.Stack.Errors, r.PeakRatio)
	p("\t\tstack (builtin)\t%.0f\t%.3f\t%.3f\t%.3f\t%d\t%.2f", pk.Builtin.RPS, pk.Builtin.P50Ms, pk.Builtin.P99Ms, pk.Builtin.P999Ms, pk.Builtin.Errors, r.BuiltinPeakRatio)
	p("")
	p("time to first token\ttarget\tsamples\tp50 ms\tp99 ms\terrors\tadded p50 ms")
	t := r.TTFT
	p("\tdirect\t%d\t%.3f\t%.3f\t%d\t", t.Direct.Samples, t.Direct.P50Ms, t.Direct.P99Ms, t.Direct.Errors)
	p("\tstack (openai)\t%d\t%.3f\t%.3f\t%d\t%+.3f", t.Stack.Samples, t.Stack.P50Ms, t.Stack.P99Ms, t.Stack.Errors, r.TTFTAddedP50Ms)
	p("\tstack (builtin)\t%d\t%.3f\t%.3f\t%d\t%+.3f", t.Builtin.Samples, t.Builtin.P50Ms, t.Builtin.P99Ms, t.Builtin.Errors, r.TTFTBuiltinAddedP50Ms)
	if o := r.Overload; o != nil {
		p("")
		p("overload\toffered rps\tok\tgoodput rps\tgoodput / peak\tok p50 / p99 ms\trefused\trefused p50 / p99 ms\twith Retry-After\ttimeouts\tother")
		p("\t%d (%.1f× %.0f)\t%d\t%.0f\t%.2f\t%.1f / %.1f\t%d\t%.1f / %.1f\t%d\t%d\t%d", o.OfferedRPS, o.Factor, o.PeakRPS, o.OK, o.GoodputRPS,
			o.GoodputPeak, o.OKP50Ms, o.OKP99Ms, o.Refused, o.RefusedP50Ms, o.RefusedP99Ms, o.RefusedRetryAft, o.Timeouts, o.Other)
		if o.FirstError != "" {
			p("\tfirst other failure: %s", o.FirstError)
		}
	}
	if s := r.Streams; s != nil {
		p("")
		p("open streams\trequested\topen\terrors\tRSS KiB/stream\theap KiB/stream\tstack KiB/stream\tgoroutines/stream\tprocess")
		p("\t%d\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.2f\t%s", s.Requested, s.Open, s.Errors, s.RSSKiBPerStream, s.HeapKiBPerStream,
			s.StackKiBPerStream, s.GoroutinesPerStream, s.Process)
		if s.FirstError != "" {
			p("\tfirst error: %s", s.FirstError)
		}
	}
	p("")
	p("errors: %d", r.Errors)
	return tw.Flush()
}
