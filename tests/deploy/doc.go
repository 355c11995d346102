// Package deploy holds the tests of deploy/: every Kubernetes manifest and
// kustomization builds and decodes strictly into the real API types, the
// NATS Helm values carry the accounts and auth callout `teegate
// nats-config` writes, and every flag, port, env var, subject and binary
// that the manifests, systemd units and Dockerfiles name is one the code
// defines. Renaming any of them in the code fails these tests.
package deploy
