# push-appserver: `make run` serves on the built-in defaults, `make test`
# runs the whole test suite (installing what it needs first).

GO      ?= go
BIN     := bin/push-appserver
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# SOURCE_DATE_EPOCH, when set, makes the date reproducible.
BUILD_DATE ?= $(shell date -u $(if $(SOURCE_DATE_EPOCH),-d @$(SOURCE_DATE_EPOCH)) +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.buildDate=$(BUILD_DATE)
CONFIG  ?=

.PHONY: all build run test test-deps vet bench bench-instructions pgo clean install dist

all: build

# A static, pure-Go binary: no cgo, nothing to install beside it.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/push-appserver

# The first build compiles every dependency (the pure-Go SQLite is big):
# say so, or it looks hung.
run:
	@test -x $(BIN) || echo "make run: building $(BIN) for the first time; this takes a few minutes (later builds take seconds)..."
	@$(MAKE) --no-print-directory build
	$(BIN) serve $(if $(CONFIG),-config $(CONFIG))

# Installs what the tests need (Prosody for the end-to-end tests, a C
# compiler for the race detector, staticcheck), then vets and runs every test.
# The import of 100,000 generated registrations runs once more without the
# race detector, which would make it take minutes; so does sockio, whose raw
# system calls are only made without it.
test: test-deps vet
	$(GO) test -race -count=1 -timeout 15m ./...
	$(GO) test -count=1 -run 'TestImportedRegistrationsPush' ./internal/e2e/
	$(GO) test -count=1 ./internal/sockio/

test-deps:
	./scripts/test-deps.sh

STATICCHECK := bin/staticcheck

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt -w needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

# Benchmarks print numbers; they are not part of `make test`. The standard
# scenario: 100,000 registrations; on each input path (publish IQs, then
# HTTP push requests) a closed loop for 30 s, then 2,000 pushes/s for 30 s;
# server CPU per push for each. BENCH_ARGS='-n 10000 -d 5s -open-d 5s' for
# a quick run, '-rate 0' for half the measured maximum; MICRO=0 skips the
# go test micro-benchmarks, some of which run on the tests' PostgreSQL
# (test-deps installs it).
BENCH_ARGS ?=
MICRO      ?= 1
bench: build
	$(GO) run ./cmd/pushbench -bin $(BIN) $(BENCH_ARGS)
ifeq ($(MICRO),1)
	./scripts/test-deps.sh
	$(GO) test -run '^$$' -bench . -benchmem ./internal/...
endif

# Instructions the server executes per push on each path, counted by
# valgrind's callgrind over a fixed number of pushes: the same from run to
# run however loaded the machine is, so it judges small changes.
# The binary keeps its symbols for callgrind_annotate (-callgrind-out).
INSTR_ARGS ?= -n 1000 -instructions 2000 -c 8 -http-c 4
bench-instructions:
	./scripts/bench-deps.sh
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/push-appserver-sym ./cmd/push-appserver
	$(GO) run ./cmd/pushbench -bin bin/push-appserver-sym $(INSTR_ARGS)

# Profiles the server under pushbench and writes the profile go build
# optimises it by (cmd/push-appserver/default.pgo; see Performance).
pgo:
	./scripts/pgo.sh

# Fuzzes every parser of outside input (publish IQs, data forms, ad-hoc
# commands, the component's stanza reader, HTTP forms, the config file) for
# FUZZTIME each. Their seed corpora, and every crasher found and kept under
# testdata/fuzz, run as ordinary tests in `make test`.
FUZZTIME ?= 30s
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) ./scripts/fuzz.sh

# make install [PREFIX=/usr/local] [DESTDIR=]: the binary, the systemd unit
# and its user, and a commented example configuration (never over an
# existing one). Then: edit /etc/push-appserver/push-appserver.toml,
# systemctl enable --now push-appserver.
PREFIX     ?= /usr/local
DESTDIR    ?=
SYSTEMDDIR ?= /lib/systemd/system
SYSUSERSDIR ?= /usr/lib/sysusers.d
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/push-appserver
	install -D -m 0644 deploy/push-appserver.sysusers $(DESTDIR)$(SYSUSERSDIR)/push-appserver.conf
	sed 's|/usr/local/bin/|$(PREFIX)/bin/|g' deploy/push-appserver.service > $(BIN).service
	install -D -m 0644 $(BIN).service $(DESTDIR)$(SYSTEMDDIR)/push-appserver.service
	sed 's|/usr/local/bin/|$(PREFIX)/bin/|g' deploy/push-appserver-backup.service > $(BIN)-backup.service
	install -D -m 0644 $(BIN)-backup.service $(DESTDIR)$(SYSTEMDDIR)/push-appserver-backup.service
	install -D -m 0644 deploy/push-appserver-backup.timer $(DESTDIR)$(SYSTEMDDIR)/push-appserver-backup.timer
	install -d -m 0751 $(DESTDIR)/etc/push-appserver
	test -e $(DESTDIR)/etc/push-appserver/push-appserver.toml || \
		install -m 0640 deploy/push-appserver.toml $(DESTDIR)/etc/push-appserver/push-appserver.toml
	@if [ -z "$(DESTDIR)" ] && command -v systemd-sysusers >/dev/null; then \
		systemd-sysusers $(SYSUSERSDIR)/push-appserver.conf && \
		chgrp push-appserver /etc/push-appserver /etc/push-appserver/push-appserver.toml && \
		chmod g+r /etc/push-appserver/push-appserver.toml; \
		if [ -e /etc/push-appserver/component-secret ]; then \
			chgrp push-appserver /etc/push-appserver/component-secret && \
			chmod 0640 /etc/push-appserver/component-secret; \
		fi; \
		systemctl daemon-reload 2>/dev/null || true; \
	fi
	@echo "installed; edit /etc/push-appserver/push-appserver.toml, then: systemctl enable --now push-appserver"
	@echo "daily backups of the registry: systemctl enable --now push-appserver-backup.timer"
	@echo "already running? switch to the new binary without a gap: systemctl kill -s USR2 --kill-whom=main push-appserver"

# Static binaries for linux/amd64 and linux/arm64 with their SHA-256 sums.
DIST_ARCHS ?= amd64 arm64
dist:
	rm -rf dist && mkdir -p dist
	for arch in $(DIST_ARCHS); do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
			-o dist/push-appserver-$(VERSION)-linux-$$arch ./cmd/push-appserver || exit 1; \
	done
	cd dist && sha256sum push-appserver-* > SHA256SUMS && cat SHA256SUMS

clean:
	rm -rf bin dist
