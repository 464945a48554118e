# flusso-pg. `make test` is what CI runs first; every target does one thing.

SHELL       := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT      ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo none)
LDFLAGS     := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BIN         ?= bin/flusso-pg
PG          ?= 17
PG_VERSIONS ?= 14 15 16 17 18
FUZZTIME    ?= 30s
IMAGE       ?= flusso-pg

.PHONY: all build test test-matrix lint fuzz bench demo docker pg clean

all: build

## build: the static binary in bin/ (CGO_ENABLED=0: no libc needed, it runs on scratch,
## distroless and alpine), with the version stamped in (flusso-pg --version)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/flusso-pg

## test: every test, integration tests included, against a throwaway Postgres
test:
	$(GO) test -race -count=1 -timeout 40m ./...

## test-matrix: every test on PostgreSQL 14 to 18 (servers fetched into .cache/pg)
test-matrix:
	@failed=""; \
	for v in $(PG_VERSIONS); do \
		echo "=== PostgreSQL $$v"; \
		scripts/pg-install.sh $$v || exit 1; \
		FLUSSO_PG_VERSION=$$v $(GO) test -count=1 -timeout 30m ./... || failed="$$failed $$v"; \
	done; \
	if [ -n "$$failed" ]; then echo "test-matrix: FAIL on PostgreSQL$$failed"; exit 1; fi; \
	echo "test-matrix: ok on PostgreSQL $(PG_VERSIONS)"

## lint: go vet, gofmt, and staticcheck when it is a tool dependency of go.mod
lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$($(GO) list -f '{{.Dir}}' ./...)); \
	if [ -n "$$out" ]; then echo "gofmt: these files need formatting (gofmt -w):"; echo "$$out"; exit 1; fi
	@if $(GO) tool -n staticcheck >/dev/null 2>&1; then \
		echo "$(GO) tool staticcheck ./..."; $(GO) tool staticcheck ./...; \
	else \
		echo "lint: staticcheck skipped (add it with: $(GO) get -tool honnef.co/go/tools/cmd/staticcheck@v0.8.2)"; \
	fi

## fuzz: each fuzz target for FUZZTIME (30s)
fuzz:
	@$(GO) test -list '^Fuzz' ./... | \
	awk '/^Fuzz/ { f[n++] = $$1 } /^ok / { for (i = 0; i < n; i++) print $$2, f[i]; n = 0 } /^FAIL/ { print > "/dev/stderr"; n = 0 }' | \
	while read -r pkg fn; do \
		echo "=== $$fn ($$pkg)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 10s $$pkg; \
	done

## bench: bench/run.sh when present, otherwise every benchmark once
bench:
	@if [ -f bench/run.sh ]; then bash bench/run.sh; \
	else $(GO) test -run '^$$' -bench . -benchtime 1x ./...; fi

## demo: a throwaway Postgres with the blog workload, follow, a few changes, the lines as they come
demo:
	scripts/demo.sh

## docker: the container image (see docs/deployment.md)
docker:
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMAGE):$(VERSION) -t $(IMAGE):latest .

## pg: fetch PostgreSQL $(PG) into .cache/pg/$(PG) (make pg PG=16)
pg:
	scripts/pg-install.sh $(PG)

clean:
	rm -rf bin
