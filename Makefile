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

# The auditor page's in-browser verifier (cmd/teegate-wasm), generated into
# the gateway's embed folder; not in git (gateway/ui/wasm/.gitignore).
WASM_DIR := gateway/ui/wasm

.PHONY: wasm
wasm: wasm-overlay ## build the in-browser verifier (GOOS=js GOARCH=wasm) into gateway/ui/wasm for the /ui page
	GOWORK=$(CURDIR)/$(WASM_WORK)/go.work GOOS=js GOARCH=wasm $(GO) build -trimpath -ldflags='-s -w' -o $(WASM_DIR)/verifier.wasm ./cmd/teegate-wasm
	gzip -9 -n -f $(WASM_DIR)/verifier.wasm
	cp "$$($(GO) env GOROOT)/lib/wasm/wasm_exec.js" $(WASM_DIR)/wasm_exec.js
	@ls -l $(WASM_DIR)/verifier.wasm.gz | awk '{printf "verifier.wasm.gz: %.1f MiB\n", $$5/1048576}'

# go-sev-guest's abi imports github.com/google/logger, whose system-log setup
# exists for unix and windows only. The wasm build alone uses a copy of that
# module with a js stub added (cmd/teegate-wasm/logger_js.go.in), through a
# go.work with a replace in bin/wasm-build; nothing in git or in the module
# cache changes.
WASM_WORK := $(BIN)/wasm-build
.PHONY: wasm-overlay
wasm-overlay:
	@rm -rf $(WASM_WORK) && mkdir -p $(WASM_WORK) $(WASM_DIR)
	@mod=$$($(GO) list -m -f '{{.Dir}} {{.Version}}' github.com/google/logger); set -- $$mod; \
	  cp -r "$$1" $(WASM_WORK)/logger && chmod -R u+w $(WASM_WORK)/logger && \
	  cp cmd/teegate-wasm/logger_js.go.in $(WASM_WORK)/logger/logger_js.go && \
	  printf 'go %s\n\nuse %s\n\nreplace github.com/google/logger %s => ./logger\n' \
	    "$$($(GO) list -m -f '{{.GoVersion}}')" "$(CURDIR)" "$$2" > $(WASM_WORK)/go.work

.PHONY: build
build: wasm ## build bin/teegate (with the /ui verifier), bin/teegate-worker and bin/nats-server (the pinned module, the server teegate embeds)
	$(GO) build -o $(BIN)/teegate ./cmd/teegate
	$(GO) build -o $(BIN)/teegate-worker ./cmd/teegate-worker
	@# The nats-server main package of the version go.mod pins: nothing is fetched from elsewhere.
	$(GO) build -o $(BIN)/nats-server github.com/nats-io/nats-server/v2

.PHONY: run
run: build ## run the whole product on this machine (teegate dev): NATS, gateway, simulated-TEE worker, builtin engine
	$(BIN)/teegate dev $(ARGS)

# make cluster: ports from CLUSTER_PORT_BASE (default 14200: NATS 14200-14202, routes +10, monitoring +20,
# gateways 14230-14231); state, logs, *.pid and env in CLUSTER_DIR (default <data dir>/cluster).
export CLUSTER_PORT_BASE CLUSTER_DIR

.PHONY: cluster
cluster: build ## start a local fleet in the background: 3 nats-server nodes, 2 gateways, 2 simulated workers; writes $$CLUSTER_DIR/env
	$(BIN)/teegate cluster up --bin $(BIN)

.PHONY: cluster-down
cluster-down: ## stop every process make cluster started
	@if [ -x $(BIN)/teegate ]; then $(BIN)/teegate cluster down; else $(GO) run ./cmd/teegate cluster down; fi

.PHONY: test
test: node-deps chromium wasm ## run every test (Go, Rego, Node SDK smoke, headless Chromium), installing what is missing
	$(GO) vet $(PKGS)
	GOWORK=$(CURDIR)/$(WASM_WORK)/go.work GOOS=js GOARCH=wasm $(GO) vet ./cmd/teegate-wasm
	@# The verifier side must build without cgo (DESIGN §2).
	CGO_ENABLED=0 $(GO) build ./attest/... ./policies/... ./cmd/teegate
	TEEGATE_REQUIRE_NODE=1 TEEGATE_REQUIRE_CHROMIUM=1 $(GO) test -count=1 -timeout 15m $(PKGS)
	$(GO) test -count=1 -race -timeout 15m $(RACE_PKGS)

.PHONY: node-deps
node-deps: ## install the official OpenAI Node SDK used by the smoke tests
	@command -v node >/dev/null || { echo "node is required (apt-get install nodejs npm)"; exit 1; }
	@if [ ! -d tests/node/node_modules/openai ]; then cd tests/node && npm ci --no-audit --no-fund --loglevel=error; fi

.PHONY: chromium
chromium: ## install Debian's chromium for the browser tests (skipped when present)
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  echo "installing chromium (apt-get)"; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -qq --no-install-recommends chromium; }

.PHONY: bench
bench: build ## side-by-side benchmark (teegate bench $(BENCHFLAGS); --quick, --json), then the Go benchmarks; numbers go to docs/PERFORMANCE.md
	$(BIN)/teegate bench $(BENCHFLAGS)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) $(PKGS)

# Static binaries for a lent machine without a toolchain: scripts/bench-device.sh
# bin/device runs the full bench from them (see docs/PERFORMANCE.md).
.PHONY: device-bench-bin
device-bench-bin: ## static stripped teegate + e2e.test, gzipped, into bin/device for scripts/bench-device.sh
	mkdir -p $(BIN)/device
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/device/teegate ./cmd/teegate
	CGO_ENABLED=0 $(GO) test -c -trimpath -ldflags='-s -w' -o $(BIN)/device/e2e.test ./tests/e2e
	gzip -1 -f $(BIN)/device/teegate $(BIN)/device/e2e.test
	git rev-parse --short=12 HEAD > $(BIN)/device/COMMIT
	@ls -l $(BIN)/device

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
	rm -f $(WASM_DIR)/verifier.wasm $(WASM_DIR)/verifier.wasm.gz $(WASM_DIR)/wasm_exec.js
