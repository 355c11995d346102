package gateway

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// kvWatch mirrors a key-value bucket into memory: apply sees every put and
// delete in order. It is how the gateway reads API keys and the worker
// registry on the request path without a round trip to JetStream.
type kvWatch struct {
	stop context.CancelFunc
	done chan struct{}
}

// watchBucket starts mirroring kv and returns once the bucket's current
// contents were applied (or ctx ended). apply is called from one goroutine.
func watchBucket(ctx context.Context, kv jetstream.KeyValue, what string, apply func(jetstream.KeyValueEntry)) (*kvWatch, error) {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w, err := kv.WatchAll(wctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watching %s: %w", what, err)
	}
	kw := &kvWatch{stop: cancel, done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		defer close(kw.done)
		defer w.Stop()
		readied := false
		for e := range w.Updates() {
			if e == nil { // the initial values are all delivered
				if !readied {
					readied = true
					close(ready)
				}
				continue
			}
			apply(e)
		}
	}()
	select {
	case <-ready:
		return kw, nil
	case <-ctx.Done():
		kw.close()
		return nil, fmt.Errorf("loading %s: %w", what, ctx.Err())
	}
}

func (kw *kvWatch) close() {
	kw.stop()
	<-kw.done
}
