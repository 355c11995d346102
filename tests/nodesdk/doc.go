// Package nodesdk runs the Node tests in tests/node: the smoke tests with
// the official OpenAI Node SDK against an in-process stack, and the
// independent verifier of docs/attestation.md against the attest test
// vectors (Node's built-in crypto only). `make test` installs the SDK first
// and sets TEEGATE_REQUIRE_NODE=1, so a missing node or SDK fails there
// instead of skipping.
package nodesdk
