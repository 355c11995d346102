# teegate — run `make` (or `make help`) to see the targets.
SHELL := /bin/bash
GO    ?= go
BIN   := bin
PKGS  := ./...
# Packages whose tests also run under the race detector in `make test`.
RACE_PKGS := ./gateway/... ./worker/... ./internal/...
FUZZTIME ?= 20s
BENCHTIME ?= 1s
BENCHFLAGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## show this help
	@awk 'BEGIN {FS = ":.*##"; printf "usage: make <target>\n\n"} /^[a-zA-Z_-]+:.*##/ { printf "  %-12s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

.PHONY: build
build: ## build bin/teegate, bin/teegate-worker and bin/nats-server (the pinned module, the server teegate embeds)
	$(GO) build -o $(BIN)/teegate ./cmd/teegate
	$(GO) build -o $(BIN)/teegate-worker ./cmd/teegate-worker
	@# The nats-server main package of the version go.mod pins: nothing is fetched from elsewhere.
	$(GO) build -o $(BIN)/nats-server github.com/nats-io/nats-server/v2

.PHONY: run
run: build ## run the whole product on this machine (teegate dev): NATS, gateway, simulated-TEE worker, builtin engine
	$(BIN)/teegate dev $(ARGS)

.PHONY: test
test: node-deps ## run every test (Go, Rego, Node SDK smoke), installing what is missing
	$(GO) vet $(PKGS)
	@# The verifier side must build without cgo (DESIGN §2).
	CGO_ENABLED=0 $(GO) build ./attest/... ./policies/... ./cmd/teegate
	TEEGATE_REQUIRE_NODE=1 $(GO) test -count=1 -timeout 15m $(PKGS)
	$(GO) test -count=1 -race -timeout 15m $(RACE_PKGS)

.PHONY: node-deps
node-deps: ## install the official OpenAI Node SDK used by the smoke tests
	@command -v node >/dev/null || { echo "node is required (apt-get install nodejs npm)"; exit 1; }
	@if [ ! -d tests/node/node_modules/openai ]; then cd tests/node && npm ci --no-audit --no-fund --loglevel=error; fi

.PHONY: bench
bench: build ## side-by-side benchmark (teegate bench $(BENCHFLAGS); --quick, --json), then the Go benchmarks; numbers go to docs/PERFORMANCE.md
	$(BIN)/teegate bench $(BENCHFLAGS)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) $(PKGS)

.PHONY: chaos
chaos: ## the fault suite's long version (tests/chaos with TEEGATE_CHAOS_LONG=1: more rounds, bigger floods); make test runs the short one
	TEEGATE_CHAOS_LONG=1 $(GO) test -count=1 -v -timeout 30m ./tests/chaos

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each (default 20s; about 14 min in all), then list failures
	@failed=""; for pkg in $$($(GO) list $(PKGS)); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for t in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg || failed="$$failed $$pkg.$$t"; \
	  done; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz failures:$$failed"; exit 1; fi

.PHONY: lint
lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

.PHONY: clean
clean: ## remove build outputs
	rm -rf $(BIN)
