# push-appserver: `make run` serves on the built-in defaults, `make test`
# runs the whole test suite (installing what it needs first).

GO      ?= go
BIN     := bin/push-appserver
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
CONFIG  ?=

.PHONY: all build run test test-deps vet bench clean

all: build

# A static, pure-Go binary: no cgo, nothing to install beside it.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/push-appserver

run: build
	$(BIN) serve $(if $(CONFIG),-config $(CONFIG))

# Installs what the tests need (Prosody for the end-to-end tests, a C
# compiler for the race detector, staticcheck), then vets and runs every test.
test: test-deps vet
	$(GO) test -race -count=1 -timeout 15m ./...

test-deps:
	./scripts/test-deps.sh

STATICCHECK := bin/staticcheck

vet:
	$(GO) vet ./...
	$(STATICCHECK) ./...

# Benchmarks print numbers; they are not part of `make test`. The standard
# scenario: 100,000 registrations, 256 publish IQs in flight for 30 s, then
# half the measured maximum for 30 s. BENCH_ARGS='-n 10000 -d 5s -open-d 5s'
# for a quick run; MICRO=0 skips the go test micro-benchmarks.
BENCH_ARGS ?=
MICRO      ?= 1
bench: build
	$(GO) run ./cmd/pushbench -bin $(BIN) $(BENCH_ARGS)
ifeq ($(MICRO),1)
	$(GO) test -run '^$$' -bench . -benchmem ./internal/...
endif

clean:
	rm -rf bin
