// Package audit is teegate's tamper-evident audit log: a JetStream stream
// of records (worker admissions and refusals, evictions, served receipts,
// API key changes, refused requests), each hash-chained to the one before
// it, with periodic checkpoints signed by the gateway's audit key.
//
// A record is the exact JSON bytes of its Entry (content) wrapped with its
// position in the chain: hash(n) = SHA-256("teegate/audit/v1" ‖ 0x00 ‖
// be64(n) ‖ hash(n-1) ‖ SHA-256(content)). Because the chain commits to a
// digest of each content, a tenant's export can replace every other
// tenant's record by that digest (a "link") and still verify end to end;
// each content carries a random salt so a link reveals nothing about the
// record it stands for.
//
// Writing: each replica's Log queues records (Append blocks only when the
// queue is full) and one writer publishes what is queued, up to 128 at a
// time, without waiting between messages. Every message expects the
// stream's last sequence to be the one before it and carries its record's
// hash as its message id; from the second on it also expects the previous
// record's hash as the stream's last message id. The server so stores a
// record only right after the one it chains to: when replicas race, the
// loser's whole batch is refused and chained again after the winner's
// records, and the chain stays one line. A record the server refuses for
// another reason is logged, never dropped silently.
//
// Trust: the gateway is outside the trusted computing base. The chain and
// the checkpoints prove the order and completeness of the log as written
// by whoever holds the audit key (the gateway operators): a record deleted,
// altered or inserted after a checkpoint was taken is detected. What was
// served, by whom, with which usage, is proven by the worker receipts the
// records carry, which Verify checks against the workers' evidence; the
// gateway's own word covers only the tenant a receipt is charged to.
//
// Records never hold prompt or completion text: receipts carry hashes, ids
// and token counts only. The package owns the record format; cmd wires its
// verifier into `teegate audit verify|export|usage`.
package audit
