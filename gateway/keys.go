package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// KeysBucket is the JetStream key-value bucket of API keys. Keys are stored
// by the hex SHA-256 of the key: the secret itself is never stored.
const KeysBucket = "teegate_apikeys"

// APIKey is an API key's record.
type APIKey struct {
	Name    string    `json:"name"`
	Tenant  string    `json:"tenant"`
	Admin   bool      `json:"admin,omitempty"`
	Created time.Time `json:"created"`
}

// KeyStore looks API keys up by their secret.
type KeyStore interface {
	Lookup(secret string) (APIKey, bool)
}

// KVKeys is a KeyStore backed by the KeysBucket, kept in memory by a
// watch so a lookup costs a hash and a map read, and revocations apply
// within the watch's latency.
type KVKeys struct {
	kv jetstream.KeyValue

	mu    sync.RWMutex
	keys  map[string]APIKey
	watch *kvWatch
}

// OpenKeys opens (creating if needed) the key bucket and starts watching it.
// It returns once the current keys are loaded.
func OpenKeys(ctx context.Context, js jetstream.JetStream) (*KVKeys, error) {
	kv, err := EnsureKeysBucket(ctx, js)
	if err != nil {
		return nil, err
	}
	k := &KVKeys{kv: kv, keys: map[string]APIKey{}}
	if k.watch, err = watchBucket(ctx, kv, "api keys", k.apply); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *KVKeys) apply(e jetstream.KeyValueEntry) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e.Operation() == jetstream.KeyValuePut {
		var rec APIKey
		if json.Unmarshal(e.Value(), &rec) == nil {
			k.keys[e.Key()] = rec
		}
		return
	}
	delete(k.keys, e.Key())
}

// EnsureKeysBucket creates or opens the API key bucket.
func EnsureKeysBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: KeysBucket, Description: "teegate API keys (SHA-256 of each key)", History: 1})
	if err != nil {
		return nil, fmt.Errorf("opening api key bucket: %w", err)
	}
	return kv, nil
}

// Lookup implements KeyStore.
func (k *KVKeys) Lookup(secret string) (APIKey, bool) {
	id := KeyID(secret)
	k.mu.RLock()
	rec, ok := k.keys[id]
	k.mu.RUnlock()
	return rec, ok
}

// WaitFor blocks until the key with secret is visible or ctx ends; used
// after adding a key so the next request sees it.
func (k *KVKeys) WaitFor(ctx context.Context, secret string) error {
	for {
		if _, ok := k.Lookup(secret); ok {
			return nil
		}
		t := time.NewTimer(5 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for api key: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// Close stops the watch.
func (k *KVKeys) Close() {
	k.watch.close()
}

// KeyID is the bucket key of an API key secret: hex SHA-256.
func KeyID(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// NewSecret returns a fresh random API key secret.
func NewSecret() (string, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating api key: %w", err)
	}
	return "sk-tg-" + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// ErrKeyExists is returned by AddKey when the key is already stored.
var ErrKeyExists = errors.New("api key already exists")

// AddKey stores secret's record. Storing the same secret twice updates it.
func AddKey(ctx context.Context, kv jetstream.KeyValue, secret string, rec APIKey) error {
	if secret == "" {
		return errors.New("adding api key: empty key")
	}
	if rec.Created.IsZero() {
		rec.Created = time.Now().UTC()
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("adding api key: %w", err)
	}
	if _, err := kv.Put(ctx, KeyID(secret), b); err != nil {
		return fmt.Errorf("adding api key: %w", err)
	}
	return nil
}
