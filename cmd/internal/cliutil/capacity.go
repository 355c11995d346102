package cliutil

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/teegate/teegate/gateway"
	"github.com/teegate/teegate/worker/wire"
)

// CapacityFlags are the gateway's cold-start queue and overload limits
// (teegate dev, teegate gateway).
type CapacityFlags struct {
	QueueLength         int
	ColdStartTimeout    time.Duration
	ModelMemory         time.Duration
	Models              []string
	MaxInflight         int
	MaxInflightPerModel int
	NoColdStart         bool
}

// Register adds -queue-length, -cold-start-timeout, -model-memory,
// -max-inflight, -max-inflight-per-model and -no-cold-start to fs, and
// -model (repeatable) when declare is set (teegate dev declares its
// engine's models; its -model names the builtin engine's model).
func (f *CapacityFlags) Register(fs *flag.FlagSet, declare bool) {
	fs.IntVar(&f.QueueLength, "queue-length", wire.DefaultQueueLength, "requests that may wait per model for a worker (cold-start queue, fleet-wide); more are answered 503")
	fs.DurationVar(&f.ColdStartTimeout, "cold-start-timeout", wire.DefaultColdStartTimeout, "how long a request waits for a worker before it is answered 503 with Retry-After")
	fs.DurationVar(&f.ModelMemory, "model-memory", wire.DefaultModelMemory, "how long a model stays known after its last worker left (its requests wait instead of 404)")
	fs.IntVar(&f.MaxInflight, "max-inflight", 0, "requests the gateway holds at once, in total; the excess is answered 503 at once (0: the workers' summed -max-concurrency plus -queue-length)")
	fs.IntVar(&f.MaxInflightPerModel, "max-inflight-per-model", 0, "requests the gateway holds at once per model (0: the model's workers' summed -max-concurrency plus -queue-length)")
	fs.BoolVar(&f.NoColdStart, "no-cold-start", false, "answer 503 at once when no worker can take a request, instead of waiting for one")
	if declare {
		fs.Func("model", "declare a model that exists with zero workers: its requests wait for a worker (repeatable)", func(v string) error {
			if v == "" {
				return errors.New("empty model name")
			}
			f.Models = append(f.Models, v)
			return nil
		})
	}
}

// ErrCapacityFlags marks a bad cold-start or overload flag.
var ErrCapacityFlags = errors.New("invalid capacity flags")

// Validate checks the flags.
func (f *CapacityFlags) Validate() error {
	switch {
	case f.QueueLength < 1:
		return fmt.Errorf("-queue-length must be at least 1: %w", ErrCapacityFlags)
	case f.ColdStartTimeout <= 0:
		return fmt.Errorf("-cold-start-timeout must be positive: %w", ErrCapacityFlags)
	case f.ModelMemory <= 0:
		return fmt.Errorf("-model-memory must be positive: %w", ErrCapacityFlags)
	case f.MaxInflight < 0 || f.MaxInflightPerModel < 0:
		return fmt.Errorf("-max-inflight and -max-inflight-per-model must be >= 0: %w", ErrCapacityFlags)
	}
	return nil
}

// Apply sets the limits in gc and returns the cold-start queue's config
// (its JS and gateway name are the gateway node's).
func (f *CapacityFlags) Apply(gc *gateway.Config) gateway.PendingConfig {
	gc.MaxInflight, gc.MaxInflightPerModel = f.MaxInflight, f.MaxInflightPerModel
	return gateway.PendingConfig{QueueLength: f.QueueLength, Timeout: f.ColdStartTimeout, ModelMemory: f.ModelMemory,
		Models: append([]string(nil), f.Models...)}
}
