package wire

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/attest"
)

// Bucket bounds. Every bucket is capped in bytes and per value, and
// discards its oldest entries when full, so nobody can fill one until
// writes fail (or a restart fails): a full bucket forgets, it never
// refuses.
const (
	// RegistryMaxBytes caps the worker registry (records are small and
	// expire a minute after their last heartbeat).
	RegistryMaxBytes = 16 << 20
	// RegistryMaxValue caps one registry record.
	RegistryMaxValue = 16 << 10
	// EvidenceMaxBytes caps the evidence bucket; EvidenceTTL is how long a
	// bundle is kept, as long as the receipts that name it (ReceiptsTTL).
	EvidenceMaxBytes = 1 << 30
	EvidenceTTL      = 30 * 24 * time.Hour
	// ReceiptsTTL is how long the gateway keeps receipts.
	ReceiptsTTL = EvidenceTTL
)

// RegistryConfig is the registry bucket's configuration, the same for
// whoever creates it first.
func RegistryConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket: RegistryBucket, Description: "teegate worker registry by evidence id", History: 1, TTL: RecordTTL * 4,
		MaxBytes: RegistryMaxBytes, MaxValueSize: RegistryMaxValue,
	}
}

// EvidenceConfig is the evidence bucket's configuration.
func EvidenceConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket: EvidenceBucket, Description: "teegate evidence bundles by id",
		History: 1, MaxBytes: EvidenceMaxBytes, MaxValueSize: attest.MaxBundleSize, TTL: EvidenceTTL,
	}
}

// EnsureBucket creates the bucket or brings an existing one to cfg, and
// makes it discard its oldest entries when full (JetStream key-value
// buckets refuse new writes by default). Only a full-permission service
// connection may call it; workers bind (BindBucket).
func EnsureBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", cfg.Bucket, err)
	}
	st, err := js.Stream(ctx, "KV_"+cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", cfg.Bucket, err)
	}
	sc := st.CachedInfo().Config
	if sc.Discard != jetstream.DiscardOld {
		sc.Discard = jetstream.DiscardOld
		if _, err := js.UpdateStream(ctx, sc); err != nil {
			return nil, fmt.Errorf("opening bucket %s: discarding old entries when full: %w", cfg.Bucket, err)
		}
	}
	return kv, nil
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
