package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
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

// APIKey is an API key's record. It never holds the secret.
type APIKey struct {
	// ID names the key in listings, limits and the audit log; it survives
	// rotation. Records written before ids existed get the first 16 hex
	// digits of their bucket key.
	ID      string    `json:"id,omitempty"`
	Name    string    `json:"name"`
	Tenant  string    `json:"tenant"`
	Admin   bool      `json:"admin,omitempty"`
	Created time.Time `json:"created"`
	// Models, when set, are the only models the key may use or see;
	// others answer 404 as if they did not exist.
	Models []string `json:"models,omitempty"`
	// RPM and TPM are requests and tokens per minute (0: the gateway's
	// default for requests, no limit for tokens); BudgetTokens the tokens
	// the key may spend in all (0: unlimited).
	RPM          int64 `json:"rpm,omitempty"`
	TPM          int64 `json:"tpm,omitempty"`
	BudgetTokens int64 `json:"budget_tokens,omitempty"`
}

// MayUse reports whether the key may use model.
func (k *APIKey) MayUse(model string) bool {
	if len(k.Models) == 0 {
		return true
	}
	for _, m := range k.Models {
		if m == model {
			return true
		}
	}
	return false
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
			if rec.ID == "" {
				rec.ID = legacyID(e.Key())
			}
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

// Lookup implements KeyStore. The secret is hashed first, so the map
// lookup runs over a digest an attacker cannot steer; the stored digest is
// then compared in constant time.
func (k *KVKeys) Lookup(secret string) (APIKey, bool) {
	id := KeyID(secret)
	k.mu.RLock()
	rec, ok := k.keys[id]
	k.mu.RUnlock()
	if !ok {
		return APIKey{}, false
	}
	sum := sha256.Sum256([]byte(secret))
	stored, err := hex.DecodeString(id)
	if err != nil || subtle.ConstantTimeCompare(stored, sum[:]) != 1 {
		return APIKey{}, false
	}
	return rec, true
}

// WaitGone blocks until the key with secret is no longer valid here.
func (k *KVKeys) WaitGone(ctx context.Context, secret string) error {
	for {
		if _, ok := k.Lookup(secret); !ok {
			return nil
		}
		t := time.NewTimer(5 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for api key revocation: %w", ctx.Err())
		case <-t.C:
		}
	}
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

func legacyID(bucketKey string) string {
	if len(bucketKey) > 16 {
		return "key_" + bucketKey[:16]
	}
	return "key_" + bucketKey
}

// NewKeyRecordID returns a fresh key id.
func newRecordID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "key_" + hex.EncodeToString(b[:])
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
	if rec.ID == "" {
		rec.ID = legacyID(KeyID(secret))
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

// ErrNoSuchKey is returned when no stored key has the id asked for.
var ErrNoSuchKey = errors.New("no such api key")

// StoredKey is a stored record with its bucket key (the secret's digest).
type StoredKey struct {
	Digest string
	APIKey
}

// ListKeys returns every stored key record.
func ListKeys(ctx context.Context, kv jetstream.KeyValue) ([]StoredKey, error) {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing api keys: %w", err)
	}
	var out []StoredKey
	for k := range lister.Keys() {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading api key: %w", err)
		}
		var rec APIKey
		if json.Unmarshal(e.Value(), &rec) != nil {
			continue
		}
		if rec.ID == "" {
			rec.ID = legacyID(k)
		}
		out = append(out, StoredKey{Digest: k, APIKey: rec})
	}
	return out, nil
}

// FindKey returns the stored key whose id (or digest) is id.
func FindKey(ctx context.Context, kv jetstream.KeyValue, id string) (StoredKey, error) {
	all, err := ListKeys(ctx, kv)
	if err != nil {
		return StoredKey{}, err
	}
	for _, k := range all {
		if k.ID == id || k.Digest == id {
			return k, nil
		}
	}
	return StoredKey{}, fmt.Errorf("finding api key %q: %w", id, ErrNoSuchKey)
}

// CreateKey stores a new key for rec (a fresh id unless set) and returns
// its secret, which is shown once and never stored.
func CreateKey(ctx context.Context, kv jetstream.KeyValue, rec APIKey) (string, APIKey, error) {
	if rec.Tenant == "" {
		return "", rec, errors.New("creating api key: a tenant is required")
	}
	if rec.RPM < 0 || rec.TPM < 0 || rec.BudgetTokens < 0 {
		return "", rec, errors.New("creating api key: limits must be >= 0")
	}
	secret, err := NewSecret()
	if err != nil {
		return "", rec, err
	}
	if rec.ID == "" {
		rec.ID = newRecordID()
	}
	rec.Created = time.Now().UTC()
	if err := AddKey(ctx, kv, secret, rec); err != nil {
		return "", rec, err
	}
	return secret, rec, nil
}

// RevokeKey deletes the key with id (or digest); every replica stops
// accepting it when its watch delivers the delete.
func RevokeKey(ctx context.Context, kv jetstream.KeyValue, id string) (StoredKey, error) {
	k, err := FindKey(ctx, kv, id)
	if err != nil {
		return k, err
	}
	if err := kv.Delete(ctx, k.Digest); err != nil {
		return k, fmt.Errorf("revoking api key: %w", err)
	}
	return k, nil
}

// RotateKey replaces the secret of the key with id: the record (id,
// tenant, limits, budget spent) moves to a new secret and the old secret
// stops working.
func RotateKey(ctx context.Context, kv jetstream.KeyValue, id string) (string, StoredKey, error) {
	k, err := FindKey(ctx, kv, id)
	if err != nil {
		return "", k, err
	}
	secret, err := NewSecret()
	if err != nil {
		return "", k, err
	}
	if err := AddKey(ctx, kv, secret, k.APIKey); err != nil {
		return "", k, err
	}
	if err := kv.Delete(ctx, k.Digest); err != nil {
		return "", k, fmt.Errorf("rotating api key: %w", err)
	}
	return secret, k, nil
}
