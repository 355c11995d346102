package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/teegate/teegate/internal/bench"
)

// runBench is `teegate bench`: the side-by-side benchmark (internal/bench).
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", stderr)
	quick := fs.Bool("quick", false, "a short run (under a minute)")
	asJSON := fs.Bool("json", false, "print one JSON object instead of tables")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the stack at peak load to `FILE`")
	rates := fs.String("rates", "", "open-loop rates in requests/s, comma-separated; the first is the headline (default 1000,500,2000; quick 1000)")
	duration := fs.Duration("duration", 0, "length of each open-loop run (default 10s; quick 3s)")
	peak := fs.Duration("peak-duration", 0, "length of each closed-loop run (default 10s; quick 3s)")
	conns := fs.Int("conns", 0, "requests in flight in the closed loop (default 64)")
	ttft := fs.Int("ttft", 0, "streamed requests per target for time to first token (default 1000; quick 200)")
	ovDur := fs.Duration("overload-duration", -1, "length of the overload run, offered twice the stack's peak (default 10s; quick 3s; 0 skips)")
	ovFactor := fs.Float64("overload-factor", 0, "the overload run offers this many times the measured peak (default 2)")
	streams := fs.Int("streams", -1, "streams held open at once for memory per stream (default 10000; 0 skips)")
	inProcess := fs.Bool("streams-in-process", false, "hold the streams against a stack in this process instead of a child process")
	serve := fs.Int("serve-streams", 0, "internal: run the child process that holds streams open")
	if err := parse(fs, args); err != nil {
		return err
	}
	raiseFileLimit()
	if *serve > 0 {
		return bench.ServeStreams(ctx, os.Stdin, stdout, *serve)
	}
	cfg := bench.Full()
	if *quick {
		cfg = bench.Quick()
	}
	if *rates != "" {
		cfg.Rates = nil
		for f := range strings.SplitSeq(*rates, ",") {
			r, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || r <= 0 {
				return usageErrorf(fs, "-rates: not a positive number: %q", f)
			}
			cfg.Rates = append(cfg.Rates, r)
		}
	}
	for _, o := range []struct {
		v   int
		dst *int
	}{{*conns, &cfg.PeakConns}, {*ttft, &cfg.TTFTSamples}} {
		if o.v > 0 {
			*o.dst = o.v
		}
	}
	if *streams >= 0 {
		cfg.Streams = *streams
	}
	if *ovDur >= 0 {
		cfg.OverloadDuration = *ovDur
	}
	if *ovFactor > 0 {
		cfg.OverloadFactor = *ovFactor
	}
	if *duration > 0 {
		cfg.Duration = *duration
	}
	if *peak > 0 {
		cfg.PeakDuration = *peak
	}
	if !*inProcess {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding this executable for the stream server: %w", err)
		}
		cfg.StreamServer = func(ctx context.Context, n int) (bench.StreamServer, error) {
			cmd := exec.CommandContext(ctx, exe, "bench", "-serve-streams", strconv.Itoa(n))
			cmd.Stderr = stderr
			return bench.StartChild(cmd)
		}
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return fmt.Errorf("creating the CPU profile: %w", err)
		}
		defer f.Close()
		cfg.CPUProfile = f
	}
	cfg.Log, cfg.Commit = stderr, commit()
	rctx, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	rep, err := bench.Run(rctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.WriteText(stdout)
}

// raiseFileLimit lifts the soft open-files limit to the hard one: each held
// stream is a socket (Go does this at start too; this keeps it explicit).
func raiseFileLimit() {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

// commit names the code being measured: the VCS revision stamped in the
// binary, else the checkout's HEAD, else "unknown".
func commit() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			if len(rev) > 12 {
				rev = rev[:12]
			}
			if dirty {
				rev += "-dirty"
			}
			return rev
		}
	}
	if out, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output(); err == nil {
		return strings.TrimSpace(string(out))
	}
	return "unknown"
}
