package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MemSample is a process's memory after a forced garbage collection.
type MemSample struct {
	RSSKiB     int64 `json:"rss_kib"`
	HeapKiB    int64 `json:"heap_inuse_kib"`
	StackKiB   int64 `json:"stack_inuse_kib"`
	Goroutines int   `json:"goroutines"`
}

// SampleMemory collects garbage, returns freed pages to the OS and reads
// this process's resident set (Linux /proc; 0 elsewhere).
func SampleMemory() MemSample {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return MemSample{RSSKiB: readRSS(), HeapKiB: int64(ms.HeapInuse >> 10), StackKiB: int64(ms.StackInuse >> 10),
		Goroutines: runtime.NumGoroutine()}
}

func readRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// StreamServer is the stack that holds the open streams, serving HoldModel
// (a builtin engine that sends its first token at once and then waits).
type StreamServer interface {
	// Endpoint is the gateway's base URL and an API key it accepts.
	Endpoint() (baseURL, apiKey string)
	// Measure samples the memory of the process the stack runs in.
	Measure() (MemSample, error)
	Close() error
}

// Streams is the open-streams run: how many streams were held open at once
// and what each cost the stack's process.
type Streams struct {
	Requested int `json:"requested"`
	Open      int `json:"open"`
	Errors    int `json:"errors"`
	// Process is "child" when the stack ran in a process of its own (only
	// the stack's memory is counted), "self" when it shared the harness's
	// process (the client's connections are counted too).
	Process         string    `json:"process"`
	Before          MemSample `json:"before"`
	After           MemSample `json:"after"`
	RSSKiBPerStream float64   `json:"rss_kib_per_stream"`
	// HeapKiBPerStream and StackKiBPerStream split the Go part of it.
	HeapKiBPerStream    float64 `json:"heap_kib_per_stream"`
	StackKiBPerStream   float64 `json:"stack_kib_per_stream"`
	GoroutinesPerStream float64 `json:"goroutines_per_stream"`
	OpenSeconds         float64 `json:"open_seconds"`
	FirstError          string  `json:"first_error,omitempty"`
}

// holdStreams opens n streams against srv, each read up to its first event
// and then left open, measures srv's memory, and closes them all. Client
// connections are bare TCP (no goroutine or buffer each), so that a stack
// sharing this process is charged for little but its own.
func holdStreams(ctx context.Context, srv StreamServer, n, parallel int) Streams {
	out := Streams{Requested: n}
	base, key := srv.Endpoint()
	u, err := url.Parse(base)
	if err != nil {
		out.Errors, out.FirstError = n, err.Error()
		return out
	}
	body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"Tell me about lighthouses."}],"max_tokens":4,"stream":true}`, HoldModel)
	req := []byte(fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", u.Host, key, len(body), body))
	// Warm up: one stream opened and closed, so the baseline includes what
	// the first request allocates once.
	if c, err := openStream(ctx, u.Host, req, make([]byte, 4096)); err == nil {
		c.Close()
	}
	before, err := srv.Measure()
	if err != nil {
		out.Errors, out.FirstError = n, err.Error()
		return out
	}
	out.Before = before
	conns := make([]net.Conn, n)
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		next = make(chan int)
	)
	start := time.Now()
	for range max(1, parallel) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for i := range next {
				c, err := openStream(ctx, u.Host, req, buf)
				mu.Lock()
				if err != nil {
					out.Errors++
					if out.FirstError == "" {
						out.FirstError = err.Error()
					}
				} else {
					conns[i] = c
					out.Open++
				}
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	out.OpenSeconds = round(time.Since(start).Seconds(), 2)
	after, err := srv.Measure()
	if err != nil && out.FirstError == "" {
		out.FirstError = err.Error()
	}
	out.After = after
	if out.Open > 0 {
		k := float64(out.Open)
		out.RSSKiBPerStream = round(float64(after.RSSKiB-before.RSSKiB)/k, 1)
		out.HeapKiBPerStream = round(float64(after.HeapKiB-before.HeapKiB)/k, 1)
		out.StackKiBPerStream = round(float64(after.StackKiB-before.StackKiB)/k, 1)
		out.GoroutinesPerStream = round(float64(after.Goroutines-before.Goroutines)/k, 2)
	}
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	return out
}

// openStream sends req on a new connection and reads until the first SSE
// data event has arrived.
func openStream(ctx context.Context, host string, req, buf []byte) (net.Conn, error) {
	d := net.Dialer{Timeout: 30 * time.Second}
	c, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, fmt.Errorf("dialing: %w", err)
	}
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := c.Write(req); err != nil {
		c.Close()
		return nil, fmt.Errorf("sending: %w", err)
	}
	var got []byte
	for !bytes.Contains(got, []byte("data:")) {
		k, err := c.Read(buf)
		got = append(got, buf[:k]...)
		if err != nil || len(got) > 64<<10 {
			c.Close()
			if err == nil {
				err = errors.New("no event in the first 64 KiB")
			}
			return nil, fmt.Errorf("reading the first event: %w (got %q)", err, truncate(got, 120))
		}
	}
	if !bytes.HasPrefix(got, []byte("HTTP/1.1 200")) {
		c.Close()
		return nil, fmt.Errorf("status: %q", truncate(got, 120))
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// ServeStreams is the child process's side of a stream run (see
// StartChild): it starts a stack serving HoldModel with room for streams
// requests at once, writes one JSON line {"url","key"} to out, then answers
// each "measure" line read from in with a MemSample JSON line, and stops
// when in ends or ctx does.
func ServeStreams(ctx context.Context, in io.Reader, out io.Writer, streams int) error {
	dir, err := os.MkdirTemp("", "teegate-bench-streams-")
	if err != nil {
		return fmt.Errorf("serving streams: %w", err)
	}
	defer os.RemoveAll(dir)
	st, err := startStreamStack(ctx, dir, streams)
	if err != nil {
		return err
	}
	defer st.Close()
	base, key := st.Endpoint()
	enc := json.NewEncoder(out)
	if err := enc.Encode(map[string]string{"url": base, "key": key}); err != nil {
		return err
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case l, ok := <-lines:
			if !ok {
				return nil
			}
			if l == "measure" {
				if err := enc.Encode(SampleMemory()); err != nil {
					return err
				}
				writeHeapProfile()
			}
		}
	}
}

// child is a StreamServer running in another process (ServeStreams).
type child struct {
	cmd      *exec.Cmd
	in       io.WriteCloser
	out      *bufio.Reader
	url, key string
}

// StartChild starts cmd, which must run ServeStreams on its stdin and
// stdout, and waits for its stack to be ready.
func StartChild(cmd *exec.Cmd) (StreamServer, error) {
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the stream server: %w", err)
	}
	c := &child{cmd: cmd, in: in, out: bufio.NewReader(outp)}
	var ready struct{ URL, Key string }
	if err := c.read(&ready); err != nil {
		c.Close()
		return nil, fmt.Errorf("starting the stream server: %w", err)
	}
	c.url, c.key = ready.URL, ready.Key
	return c, nil
}

func (c *child) read(v any) error {
	line, err := c.out.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("reading from the stream server: %w", err)
	}
	return json.Unmarshal(line, v)
}

func (c *child) Endpoint() (string, string) { return c.url, c.key }

func (c *child) Measure() (MemSample, error) {
	var m MemSample
	if _, err := io.WriteString(c.in, "measure\n"); err != nil {
		return m, fmt.Errorf("asking the stream server: %w", err)
	}
	return m, c.read(&m)
}

func (c *child) Close() error {
	c.in.Close()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		return <-done
	}
}

// HeapProfileEnv names a file the stream server writes a heap profile to
// at each measurement (to see what a held stream's memory is).
const HeapProfileEnv = "TEEGATE_BENCH_HEAPPROFILE"

func writeHeapProfile() {
	path := os.Getenv(HeapProfileEnv)
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	_ = pprof.Lookup("heap").WriteTo(f, 0)
}
