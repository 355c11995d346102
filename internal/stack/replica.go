package stack

import (
	"context"
	"fmt"

	"github.com/teegate/teegate/gateway"
	"github.com/teegate/teegate/gateway/audit"
	"github.com/teegate/teegate/internal/gatewaynode"
)

// Replica is one more gateway node on the stack's NATS, built by the same
// assembly as the first one and as `teegate gateway` (internal/gatewaynode):
// its own connections, key watch, directory, limit counters client, audit
// writer and admission service (answering the auth callout in turn with the
// others), sharing all state with the first through JetStream only.
type Replica struct {
	URL     string
	Gateway *gateway.Gateway
	Keys    *gateway.KVKeys
	Audit   *audit.Log
	Node    *gatewaynode.Node
}

// AddGateway starts another gateway replica (the stack's gateway settings,
// with its own name in audit records); Close stops it.
func (s *Stack) AddGateway(ctx context.Context, name string) (*Replica, error) {
	nc, err := s.connect("teegate-" + name)
	if err != nil {
		return nil, err
	}
	sys, err := s.Server.ConnectSystem("teegate-" + name + "-sys")
	if err != nil {
		return nil, fmt.Errorf("adding gateway: %w", err)
	}
	s.conns = append(s.conns, sys)
	cfg := s.nodeCfg
	cfg.Conn, cfg.Sys, cfg.Addr, cfg.Name = nc, sys, "127.0.0.1:0", name
	// One registry cannot hold two gateways' metrics under the same names;
	// the first gateway's are the stack's.
	cfg.Gateway.Metrics, cfg.Admission.Metrics = nil, nil
	n, err := gatewaynode.Start(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("adding gateway: %w", err)
	}
	r := &Replica{URL: n.URL, Gateway: n.Gateway, Keys: n.Keys, Audit: n.Audit, Node: n}
	s.mu.Lock()
	s.replicas = append(s.replicas, r)
	s.mu.Unlock()
	return r, nil
}

func (r *Replica) close(ctx context.Context) { r.Node.Close(ctx) }

// FlushAudit waits until every audit writer of the stack wrote what it
// queued.
func (s *Stack) FlushAudit(ctx context.Context) error {
	if err := s.Audit.Flush(ctx); err != nil {
		return err
	}
	for _, r := range s.gateways() {
		if err := r.Audit.Flush(ctx); err != nil {
			return err
		}
	}
	return nil
}

// CheckpointAudit flushes every audit writer of the stack and has each
// write a signed checkpoint, so the stream ends on one.
func (s *Stack) CheckpointAudit(ctx context.Context) error {
	if err := s.FlushAudit(ctx); err != nil {
		return err
	}
	for _, r := range s.gateways() {
		if err := r.Audit.Checkpoint(ctx); err != nil {
			return err
		}
	}
	return s.Audit.Checkpoint(ctx)
}

func (s *Stack) gateways() []*Replica {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Replica(nil), s.replicas...)
}
