// Package nodesdk runs the smoke tests in tests/node with the official
// OpenAI Node SDK against an in-process stack. `make test` installs the SDK
// first and sets TEEGATE_REQUIRE_NODE=1, so a missing SDK fails there
// instead of skipping.
package nodesdk
