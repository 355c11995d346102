package wire

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// RegistryConfig is the registry bucket's configuration, the same for
// whoever creates it first.
func RegistryConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket: RegistryBucket, Description: "teegate worker registry", History: 1, TTL: RecordTTL * 4,
	}
}

// EvidenceConfig is the evidence bucket's configuration.
func EvidenceConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket: EvidenceBucket, Description: "teegate evidence bundles by id",
		History: 1, MaxBytes: 1 << 30, TTL: 30 * 24 * time.Hour,
	}
}

// BindBucket opens an existing bucket, which needs only the stream-info
// permission an admitted worker has, and creates it only when it is missing
// (a server without admission).
func BindBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}
