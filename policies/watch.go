package policies

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultWatchInterval is how often a Watcher with no Interval polls.
// Policy files change by hand or by deployment, so a couple of seconds of
// delay costs nothing and a stat of three files every two seconds is free.
const DefaultWatchInterval = 2 * time.Second

// racyWindow: a file whose mtime is this close to (or after) the previous
// poll may have been rewritten within one mtime tick, unnoticed by stat on
// filesystems with coarse timestamps (FAT: 2 s, some network filesystems:
// 1 s). Such files are re-hashed even when stat looks unchanged, the way
// git treats "racily clean" index entries.
const racyWindow = 2 * time.Second

// ErrWatcherRunning: Watch was called on a Watcher that is already watching.
var ErrWatcherRunning = errors.New("policy watcher already running")

// Watcher reloads a policy when its files change: the .rego file given to
// Watch and the data files Load reads beside it (NAME.data.json and
// NAME.data/*.json, including ones added or removed later). It polls: each
// tick it stats the files and, when a size, mtime or the set of files
// changed (or an mtime is too recent to trust), hashes their contents and
// reloads only if the contents differ. Polling needs no new dependency and
// follows symlink swaps (Kubernetes ConfigMaps) that event APIs miss.
//
// The zero Watcher is ready to use. One Watcher runs one Watch at a time.
type Watcher struct {
	// Interval between polls; DefaultWatchInterval when zero or negative.
	// Tests set a few milliseconds.
	Interval time.Duration

	once    sync.Once
	force   chan struct{}
	running atomic.Bool
	// polled, when set (by tests in this package), runs after every poll,
	// so a test can wait for polls without sleeping.
	polled func()
}

func (w *Watcher) forceCh() chan struct{} {
	w.once.Do(func() { w.force = make(chan struct{}, 1) })
	return w.force
}

// Reload asks the running Watch to re-read the policy now and report the
// result to onChange even if nothing changed (the operator's SIGHUP). It
// does not block; requests made while one is pending are merged, and a
// request made before Watch starts is served by Watch's first load.
func (w *Watcher) Reload() {
	select {
	case w.forceCh() <- struct{}{}:
	default:
	}
}

// Watch loads the policy at path (see Load), reports it to onChange, then
// polls until ctx ends and reports each reload. onChange receives either a
// compiled policy and a nil error, or a nil policy and the load error (a
// half-written or broken file): keep serving the previous policy then, and
// the next change of the files is tried again. A poll reports a policy only
// when its Hash differs from the last one reported (touching a file or
// reformatting the data reports nothing), but always reports errors; a
// Reload always reports. onChange is called from Watch's goroutine, one
// call at a time, and should return quickly. Watch returns nil when ctx
// ends, or ErrWatcherRunning if this Watcher is already watching.
func (w *Watcher) Watch(ctx context.Context, path string, onChange func(*Policy, error)) error {
	if !w.running.CompareAndSwap(false, true) {
		return fmt.Errorf("watching policy %s: %w", path, ErrWatcherRunning)
	}
	defer w.running.Store(false)
	interval := w.Interval
	if interval <= 0 {
		interval = DefaultWatchInterval
	}
	force := w.forceCh()
	// The first load serves any Reload requested before Watch started.
	select {
	case <-force:
	default:
	}

	s := &watchState{path: path, onChange: onChange}
	s.check(true)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-force:
			s.check(true)
		case <-t.C:
			s.check(false)
			if w.polled != nil {
				w.polled()
			}
		}
	}
}

// watchState is what Watch remembers between polls.
type watchState struct {
	path     string
	onChange func(*Policy, error)

	stats    []fileStat
	statTime time.Time // wall time just before stats were taken
	sum      [sha256.Size]byte
	lastHash string // hash of the last policy reported; "" after an error
}

// fileStat is what a poll compares. err is the text of a stat error, so a
// file that vanishes (or becomes unreadable) counts as a change.
type fileStat struct {
	path  string
	size  int64
	mtime time.Time
	err   string
}

// check polls the files and reloads if they changed; force reloads and
// reports regardless.
func (s *watchState) check(force bool) {
	now := time.Now()
	stats := statPolicyFiles(s.path)
	changed := !slices.Equal(stats, s.stats)
	if !changed {
		for _, st := range stats {
			if st.err == "" && !st.mtime.Before(s.statTime.Add(-racyWindow)) {
				changed = true
				break
			}
		}
	}
	s.stats, s.statTime = stats, now
	if !force && !changed {
		return
	}
	sum := hashPolicyFiles(stats)
	if !force && sum == s.sum {
		return
	}
	s.sum = sum

	p, err := Load(s.path)
	switch {
	case err != nil:
		s.lastHash = ""
		s.onChange(nil, err)
	case force || p.Hash() != s.lastHash:
		s.lastHash = p.Hash()
		s.onChange(p, nil)
	}
}

// statPolicyFiles stats the policy file and its data files, in Load's
// order. A failure to list the data files is recorded as an entry of its
// own so that it, too, is a change.
func statPolicyFiles(path string) []fileStat {
	files := []string{path}
	data, err := dataFiles(strings.TrimSuffix(path, filepath.Ext(path)))
	if err != nil {
		return []fileStat{statFile(path), {path: "(data files)", err: err.Error()}}
	}
	files = append(files, data...)
	out := make([]fileStat, 0, len(files))
	for _, f := range files {
		out = append(out, statFile(f))
	}
	return out
}

func statFile(path string) fileStat {
	fi, err := os.Stat(path) // follows symlinks: a swapped target is a change
	if err != nil {
		return fileStat{path: path, err: err.Error()}
	}
	return fileStat{path: path, size: fi.Size(), mtime: fi.ModTime()}
}

// hashPolicyFiles hashes the names and contents of the files, each
// length-prefixed; an unreadable file contributes its error text instead.
func hashPolicyFiles(stats []fileStat) [sha256.Size]byte {
	h := sha256.New()
	field := func(b []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	for _, st := range stats {
		field([]byte(st.path))
		if st.err != "" {
			field([]byte{0})
			field([]byte(st.err))
			continue
		}
		b, err := os.ReadFile(st.path)
		if err != nil {
			field([]byte{0})
			field([]byte(err.Error()))
			continue
		}
		field([]byte{1})
		field(b)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}
