package gatewaynode

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
)

// replicated creates and updates buckets and streams with n replicas
// unless their config names a number: the packages that own a bucket keep
// one config for a single server and a cluster alike.
type replicated struct {
	jetstream.JetStream
	n int
}

func (r replicated) kv(cfg jetstream.KeyValueConfig) jetstream.KeyValueConfig {
	if cfg.Replicas == 0 && r.n > 1 {
		cfg.Replicas = r.n
	}
	return cfg
}

func (r replicated) stream(cfg jetstream.StreamConfig) jetstream.StreamConfig {
	if cfg.Replicas == 0 && r.n > 1 {
		cfg.Replicas = r.n
	}
	return cfg
}

func (r replicated) CreateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return r.JetStream.CreateKeyValue(ctx, r.kv(cfg))
}

func (r replicated) UpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return r.JetStream.UpdateKeyValue(ctx, r.kv(cfg))
}

func (r replicated) CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return r.JetStream.CreateOrUpdateKeyValue(ctx, r.kv(cfg))
}

func (r replicated) CreateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return r.JetStream.CreateStream(ctx, r.stream(cfg))
}

func (r replicated) UpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return r.JetStream.UpdateStream(ctx, r.stream(cfg))
}

func (r replicated) CreateOrUpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return r.JetStream.CreateOrUpdateStream(ctx, r.stream(cfg))
}
