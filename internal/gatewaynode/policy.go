package gatewaynode

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/teegate/teegate/policies"
)

// Policy bucket: the fleet's admission policy, one key.
const (
	PolicyBucket = "teegate_policy"
	policyKey    = "active"
)

// sharedPolicy is the value under policyKey.
type sharedPolicy struct {
	Name   string          `json:"name"`
	Hash   string          `json:"hash"`
	Source []byte          `json:"source"`
	Data   json.RawMessage `json:"data,omitempty"`
	SetBy  string          `json:"set_by,omitempty"`
	SetAt  time.Time       `json:"set_at"`
}

// maxSharedPolicy bounds a stored policy (source plus data).
const maxSharedPolicy = 4 << 20

func encodePolicy(p *policies.Policy, by string, now time.Time) ([]byte, error) {
	sp := sharedPolicy{Name: p.Name(), Hash: p.Hash(), Source: p.Source(), SetBy: by, SetAt: now.UTC()}
	if d := p.Data(); len(d) > 0 && !bytes.Equal(d, []byte("null")) {
		sp.Data = d
	}
	raw, err := json.Marshal(sp)
	if err != nil {
		return nil, fmt.Errorf("encoding shared policy: %w", err)
	}
	if len(raw) > maxSharedPolicy {
		return nil, fmt.Errorf("policy of %d bytes is too large to share (max %d)", len(raw), maxSharedPolicy)
	}
	return raw, nil
}

// ErrSharedPolicy: the stored policy does not decode, compile, or match
// its hash.
var ErrSharedPolicy = errors.New("invalid shared policy")

func decodePolicy(raw []byte) (*policies.Policy, *sharedPolicy, error) {
	if len(raw) > maxSharedPolicy {
		return nil, nil, fmt.Errorf("%d bytes: %w", len(raw), ErrSharedPolicy)
	}
	var sp sharedPolicy
	if err := json.Unmarshal(raw, &sp); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrSharedPolicy, err)
	}
	var data map[string]any
	if len(sp.Data) > 0 {
		dec := json.NewDecoder(bytes.NewReader(sp.Data))
		dec.UseNumber() // numbers as written: the hash covers them
		if err := dec.Decode(&data); err != nil {
			return nil, nil, fmt.Errorf("%w: data: %w", ErrSharedPolicy, err)
		}
	}
	p, err := policies.LoadBytes(sp.Name, sp.Source, data)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrSharedPolicy, err)
	}
	if p.Hash() != sp.Hash {
		return nil, nil, fmt.Errorf("%w: hash %s, stored %s", ErrSharedPolicy, p.Hash(), sp.Hash)
	}
	return p, &sp, nil
}

func policyBucket(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: PolicyBucket, Description: "teegate fleet admission policy", History: 5,
		MaxValueSize: maxSharedPolicy, Replicas: replicas}
}

// watchPolicy adopts every policy stored in the bucket that differs from
// the current one, until ctx ends.
func (n *Node) watchPolicy(ctx context.Context) {
	defer n.bg.Done()
	w, err := n.policyKV.Watch(ctx, policyKey, jetstream.UpdatesOnly())
	if err != nil {
		n.log.Error("watching the fleet policy", "err", err)
		return
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			p, sp, err := decodePolicy(e.Value())
			if err != nil {
				n.log.Error("ignoring the stored fleet policy; keeping the current one", "err", err)
				continue
			}
			if cur := n.Policy.Policy(); cur != nil && cur.Hash() == p.Hash() {
				continue // ours, or one we hold already
			}
			n.log.Info("adopting the fleet policy", "policy", p.Name(), "hash", p.Hash(), "set_by", sp.SetBy)
			rctx, cancel := context.WithTimeout(ctx, time.Minute)
			if err := n.apply(rctx, p, sp.SetAt); err != nil {
				n.log.Error("re-judging workers after a fleet policy change", "err", err)
			}
			cancel()
		}
	}
}
