package client

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/teegate/teegate/attest"
)

// TestDefaultMaxEvidenceAge: with no MaxAge set, evidence older than
// DefaultMaxEvidenceAge is refused (issue 11 finding 3: a 25-year-old
// bundle verified); an explicit MaxAge and NoMaxAge override it.
func TestDefaultMaxEvidenceAge(t *testing.T) {
	tr, err := LoadTranscript(filepath.Join("testdata", "chat.transcript.json"))
	if err != nil {
		t.Fatal(err)
	}
	saved := tr.Saved
	at := func(d time.Duration) func() time.Time { return func() time.Time { return saved.Add(d) } }
	for _, tc := range []struct {
		name   string
		now    time.Duration
		maxAge time.Duration
		want   error
	}{
		{"as saved", 0, 0, nil},
		{"23 hours later", 23 * time.Hour, 0, nil},
		{"25 hours later", 25 * time.Hour, 0, attest.ErrEvidenceExpired},
		{"25 hours later, no limit", 25 * time.Hour, NoMaxAge, nil},
		{"2 hours later, limit 1 hour", 2 * time.Hour, time.Hour, attest.ErrEvidenceExpired},
		{"an hour before it was made", -time.Hour, 0, attest.ErrEvidenceExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := Options{AllowSimulated: true, Now: at(tc.now)}
			opts.Verify.MaxAge = tc.maxAge
			_, err := VerifyTranscript(context.Background(), tr, opts)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if tc.want != nil && Cause(err) != "evidence" {
				t.Fatalf("cause %q", Cause(err))
			}
		})
	}
}
