package enclave

import (
	"context"
	"slices"
	"testing"

	"github.com/teegate/teegate/attest"
)

// SetModels starts an epoch whose evidence names the new list; the epoch
// it replaces keeps naming its own models, in fresh evidence too.
func TestKeeperSetModels(t *testing.T) {
	k, _ := newTestKeeper(t, &fakeAttester{}, nil)
	old := k.Current()
	models := []string{"builtin", "tiny"}
	e, err := k.SetModels(context.Background(), models)
	if err != nil {
		t.Fatal(err)
	}
	models[1] = "mutated" // the keeper keeps its own copy
	if k.Current() != e || e.ID == old.ID {
		t.Fatal("SetModels did not start a new epoch")
	}
	ev, err := attest.VerifyBundleFull(context.Background(), e.Raw, fakeVerifyOptions())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ev.Bundle.Worker.Models, []string{"builtin", "tiny"}) || ev.Bundle.Worker.ID != "w1" {
		t.Fatalf("new epoch names %+v", ev.Bundle.Worker)
	}
	if _, ok := k.Lookup(old.ID); !ok {
		t.Fatal("the previous epoch left before its grace period")
	}
	fresh, _, err := old.Attest(context.Background(), [32]byte{1})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(fresh.Worker.Models, []string{"builtin"}) {
		t.Fatalf("fresh evidence of the previous epoch names %v", fresh.Worker.Models)
	}
	k.Close()
	if _, err := k.SetModels(context.Background(), []string{"x"}); err == nil {
		t.Fatal("SetModels on a closed keeper succeeded")
	}
}
