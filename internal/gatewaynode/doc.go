// Package gatewaynode assembles the gateway side of teegate: the buckets
// (API keys, worker registry, evidence, receipts; replicated when the
// cluster has the nodes), the admission service answering the server's
// auth callout with the fleet's policy, and the HTTP gateway routing by
// the shared registry and decisions. `teegate gateway` (any number of
// replicas on one NATS cluster) and `teegate dev` (one, on the embedded
// server) both build it here; wiring stays in cmd/.
//
// The fleet has one policy. It lives in the teegate_policy bucket (Rego
// source, data and hash): a replica that starts or reloads its policy
// writes it there, and every replica adopts what the bucket holds. Each
// replica re-judges only the connections whose callout it answered, so a
// reload on one replica re-judges every worker once, not once per
// replica.
package gatewaynode
