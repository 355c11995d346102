package gatewaynode

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
)

// Replicated returns js with its create and update calls for buckets and
// streams given n replicas unless their config names a number, and never
// fewer than the bucket or stream already has: the packages that own a
// bucket keep one config for a single server and a cluster alike, and a
// process that opens a bucket without knowing the cluster's size (the
// keys command, n 0) does not scale an R3 bucket down to one replica, which
// would leave it on one node, lost with that node.
func Replicated(js jetstream.JetStream, n int) jetstream.JetStream {
	return replicated{js, n}
}

type replicated struct {
	jetstream.JetStream
	n int
}

// replicas is the count for a stream named name whose config gives want.
func (r replicated) replicas(ctx context.Context, name string, want int) int {
	if want != 0 {
		return want
	}
	want = r.n
	if st, err := r.JetStream.Stream(ctx, name); err == nil {
		want = max(want, st.CachedInfo().Config.Replicas)
	}
	if want <= 1 {
		return 0
	}
	return want
}

func (r replicated) kv(ctx context.Context, cfg jetstream.KeyValueConfig) jetstream.KeyValueConfig {
	cfg.Replicas = r.replicas(ctx, "KV_"+cfg.Bucket, cfg.Replicas)
	return cfg
}

func (r replicated) stream(ctx context.Context, cfg jetstream.StreamConfig) jetstream.StreamConfig {
	cfg.Replicas = r.replicas(ctx, cfg.Name, cfg.Replicas)
	return cfg
}

func (r replicated) CreateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return r.JetStream.CreateKeyValue(ctx, r.kv(ctx, cfg))
}

func (r replicated) UpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return r.JetStream.UpdateKeyValue(ctx, r.kv(ctx, cfg))
}

func (r replicated) CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return r.JetStream.CreateOrUpdateKeyValue(ctx, r.kv(ctx, cfg))
}

func (r replicated) CreateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return r.JetStream.CreateStream(ctx, r.stream(ctx, cfg))
}

func (r replicated) UpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return r.JetStream.UpdateStream(ctx, r.stream(ctx, cfg))
}

func (r replicated) CreateOrUpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return r.JetStream.CreateOrUpdateStream(ctx, r.stream(ctx, cfg))
}
