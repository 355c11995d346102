package enclave

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/teegate/teegate/attest"
)

// TestEpochWindowInBundle: every bundle of an epoch (its own and the ones
// Attest makes for fresh mode and challenges) states the epoch's window,
// which verifies as bound by the report data.
func TestEpochWindowInBundle(t *testing.T) {
	k, clk := newTestKeeper(t, &fakeAttester{gpus: 1}, nil)
	e := k.Current()
	want := attest.NewEpochWindow(e.Started, time.Hour, time.Minute)
	if !e.Window.Equal(want) || !e.Bundle.Epoch.Equal(want) || !e.Bundle.Created.Equal(want.NotBefore) {
		t.Fatalf("bundle window %+v, want %+v", e.Bundle.Epoch, want)
	}
	clk.add(30 * time.Minute)
	b, raw, err := e.Attest(context.Background(), [32]byte{9})
	if err != nil {
		t.Fatal(err)
	}
	if !b.Epoch.Equal(want) {
		t.Fatalf("fresh bundle window %+v", b.Epoch)
	}
	opts := fakeVerifyOptions()
	opts.Now = clk.now
	for _, r := range [][]byte{e.Raw, raw} {
		c, err := attest.VerifyBundle(context.Background(), r, opts)
		if err != nil {
			t.Fatal(err)
		}
		if c.Epoch == nil || !c.Epoch.ErasedAt.Equal(want.ErasedAt()) {
			t.Fatalf("claims epoch %+v", c.Epoch)
		}
	}
}

// TestKeeperRefusesOutsideEpoch: the keeper signs no receipt dated outside
// the window its bundles state, and once its clock reaches the window's end
// it has erased the keys: nothing signs, not even after the clock goes back.
func TestKeeperRefusesOutsideEpoch(t *testing.T) {
	k, clk := newTestKeeper(t, &fakeAttester{}, nil)
	e := k.Current()
	w := e.Window
	for name, at := range map[string]time.Time{
		"before the epoch":      w.NotBefore.Add(-time.Second),
		"after the erasure":     w.ErasedAt().Add(time.Second),
		"twenty years later":    w.NotBefore.AddDate(20, 0, 0),
		"in 2001":               time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC),
		"one second before end": w.ErasedAt().Add(-time.Second),
	} {
		r := testReceipt(nil, nil)
		r.Created = at
		_, err := e.SignReceipt(r)
		if name == "one second before end" {
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			continue
		}
		if !errors.Is(err, ErrOutsideEpoch) {
			t.Fatalf("%s: got %v, want ErrOutsideEpoch", name, err)
		}
	}
	// The clock before the epoch (stepped back): no signature at all.
	clk.add(-time.Hour)
	if _, err := e.Sign([]byte("x")); !errors.Is(err, ErrOutsideEpoch) {
		t.Fatalf("clock before the epoch: %v", err)
	}
	// Rotation kept failing until past the end of the window: the keys are
	// erased, by Sign and by the keeper's pruning alike.
	clk.add(w.ErasedAt().Sub(clk.now()))
	k.prune()
	if _, _, err := k.Sign([]byte("x")); !errors.Is(err, ErrEpochRetired) {
		t.Fatalf("past the window: %v", err)
	}
	clk.add(-time.Hour)
	if _, err := e.Sign([]byte("x")); !errors.Is(err, ErrEpochRetired) {
		t.Fatalf("erased keys signed after the clock went back: %v", err)
	}
	if _, _, err := e.Attest(context.Background(), [32]byte{1}); !errors.Is(err, ErrEpochRetired) {
		t.Fatalf("erased epoch attested: %v", err)
	}
	clk.add(time.Hour)
	if _, err := k.Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := testReceipt(nil, nil)
	r.Created = clk.now().Truncate(time.Second)
	if _, err := k.SignReceipt(r); err != nil {
		t.Fatalf("new epoch: %v", err)
	}
}

// TestKeeperEraseBySign: Sign itself erases the keys at the window's end,
// even when nothing prunes.
func TestKeeperEraseBySign(t *testing.T) {
	k, clk := newTestKeeper(t, &fakeAttester{}, nil)
	e := k.Current()
	clk.add(e.Window.ErasedAt().Sub(clk.now()))
	if _, err := e.Sign([]byte("x")); !errors.Is(err, ErrEpochRetired) {
		t.Fatalf("at the window's end: %v", err)
	}
	e.mu.RLock()
	erased := e.sign == nil && e.hpke == nil && e.pre == nil
	e.mu.RUnlock()
	if !erased {
		t.Fatal("keys kept past the window's end")
	}
}

// TestKeeperLateRotationRetiresAtWindowEnd: an epoch rotated out late still
// goes at the end its bundles state, not a full grace after the rotation.
func TestKeeperLateRotationRetiresAtWindowEnd(t *testing.T) {
	k, clk := newTestKeeper(t, &fakeAttester{}, nil)
	first := k.Current()
	clk.add(time.Hour + 30*time.Second) // rotation 30 s late
	if _, err := k.Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
	clk.add(first.Window.ErasedAt().Sub(clk.now()))
	if _, ok := k.Lookup(first.ID); ok {
		t.Fatal("old epoch kept past its window")
	}
	if _, err := first.Sign([]byte("x")); !errors.Is(err, ErrEpochRetired) {
		t.Fatalf("old epoch signed past its window: %v", err)
	}
}
