# Berth build, test and tooling. `make` builds bin/berthd, bin/berth-shim
# and bin/berthctl. Tool versions are pinned here and installed into
# bin/tools with `go install`, so every machine generates the same code.

SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
TOOLS := $(BIN)/tools

BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.0
# protoc-gen-go-ttrpc generates the shim API (berth.shim.v1, served with
# ttrpc); keep it at the github.com/containerd/ttrpc version in go.mod.
PROTOC_GEN_GO_TTRPC_VERSION := v1.2.10
GRPCURL_VERSION := v1.9.4

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X github.com/berth-dev/berth/version.Version=$(VERSION) -X github.com/berth-dev/berth/version.GitCommit=$(COMMIT)

# Debian packages the integration tests and the demo use.
TEST_PACKAGES := busybox-static docker-registry iptables containernetworking-plugins libseccomp-dev skopeo

.PHONY: all build bench-quick bench-go install berthd berth-shim berthctl tools proto proto-check proto-lint lint \
	test unit integration test-deps demo bench clean

all: build

build: berthd berth-shim berthctl

# berthctl is built without cgo: a static binary starts faster (no dynamic
# loader, no cgo runtime: about 8 ms of a `run --rm true` here, measured
# with perf stat -r 30) and runs on any Linux host. The shim needs cgo
# (libseccomp, the nsenter constructor); berthd keeps the system resolver.
berthctl: CGO = 0
berthd berth-shim: CGO = 1

berthd berth-shim berthctl:
	CGO_ENABLED=$(CGO) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/$@ ./cmd/$@

$(TOOLS)/buf:
	GOBIN=$(TOOLS) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(TOOLS)/protoc-gen-go:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
$(TOOLS)/protoc-gen-go-ttrpc:
	GOBIN=$(TOOLS) $(GO) install github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc@$(PROTOC_GEN_GO_TTRPC_VERSION)
$(TOOLS)/grpcurl:
	GOBIN=$(TOOLS) $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

tools: $(TOOLS)/buf $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc $(TOOLS)/protoc-gen-go-ttrpc $(TOOLS)/grpcurl

proto-lint: $(TOOLS)/buf
	$(TOOLS)/buf lint

# proto regenerates the Go code beside the .proto files.
proto: proto-lint $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc $(TOOLS)/protoc-gen-go-ttrpc
	$(TOOLS)/buf generate

# proto-check generates into a scratch dir and fails if the committed code differs.
proto-check: proto-lint $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc $(TOOLS)/protoc-gen-go-ttrpc
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	$(TOOLS)/buf generate -o $$tmp && \
	diff -r -x '*.proto' $$tmp/proto proto && \
	echo "proto-check: generated code matches proto/" || \
	{ echo "proto-check: generated code is stale: run 'make proto' and commit"; exit 1; }

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# test-deps installs what building and testing need (libseccomp-dev: the
# shim links libseccomp through cgo). Root only; CI runs as root.
test-deps:
	@if [ "$$(id -u)" != 0 ]; then echo "make test runs as root (namespaces, mounts, cgroups)"; exit 1; fi
	@missing=""; for p in $(TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# test: unit and integration tests, as root, against the real binaries.
test: test-deps lint proto-check build $(TOOLS)/grpcurl
	BERTH_BIN=$(BIN) GRPCURL=$(TOOLS)/grpcurl $(GO) test -count=1 -timeout 15m ./...

unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /integration)

integration: build $(TOOLS)/grpcurl
	BERTH_BIN=$(BIN) GRPCURL=$(TOOLS)/grpcurl $(GO) test -count=1 -v -timeout 15m ./integration/...

# demo builds Berth and shows it working in a private, temporary root.
demo: test-deps build
	@bash hack/demo.sh

# bench: Berth side by side with containerd + runc (installed here if
# missing), then the Go micro-benchmarks of the hot paths. Root only.
bench: test-deps build
	@for p in containerd runc; do dpkg -s $$p >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$p; }; done
	$(GO) run ./integration/bench -bin $(BIN) -out bench/results.json
	$(GO) test -run '^$$' -bench . -benchtime 5x -benchmem ./content/ ./snapshotter/layer/ ./metadata/ ./agent/oci/

# bench-quick checks the harness itself with few iterations and a small image.
bench-quick: test-deps build
	$(GO) run ./integration/bench -bin $(BIN) -quick -out /tmp/berth-bench-quick.json

# bench-go runs the Go benchmarks alone; BENCH=ColdPull picks one.
BENCH ?= .
bench-go: build
	BERTH_BIN=$(BIN) $(GO) test -run '^$$' -bench '$(BENCH)' -benchmem ./...

# install puts the binaries in $(PREFIX)/bin and the systemd unit in
# /etc/systemd/system (root).
PREFIX ?= /usr/local
install: build
	install -d $(PREFIX)/bin /etc/systemd/system $(PREFIX)/share/doc/berth
	install -m 0755 $(BIN)/berthd $(BIN)/berth-shim $(BIN)/berthctl $(PREFIX)/bin/
	install -m 0644 cmd/berthd/berthd.service /etc/systemd/system/berthd.service
	install -m 0644 README.md $(PREFIX)/share/doc/berth/README.md

clean:
	rm -rf $(BIN)
