# popconnector — the two commands a newcomer needs are `make demo` and `make test`.
# Both install what they need on a fresh Debian machine (as root, or with sudo).

SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
BIN := bin
FUZZTIME ?= 8s
# Fuzz targets run briefly in `make test`, longer in `make fuzz`.
FUZZ_TARGETS := \
	./internal/message:FuzzInspector \
	./internal/pop3:FuzzDotReader \
	./internal/pop3:FuzzServerReplies \
	./internal/relay:FuzzDotStuffer \
	./internal/config:FuzzParse \
	./internal/recipients:FuzzResolve \
	./internal/notify:FuzzBuildDSN \
	./internal/oauth/oauthsasl:FuzzMessages

.PHONY: all build deps demo test unit integration fuzz fuzz-short bench vet clean

# AWS: lambda, template-check, deploy, logs (see the file).
include infra/aws.mk
# Optional long suites, present as their harnesses land.
-include infra/reliability.mk
-include infra/bench.mk

all: build

build:
	$(GO) build -o $(BIN)/popconn ./cmd/popconn

deps:
	bash infra/install-deps.sh

# demo: real Dovecot and a real SMTP server on loopback, one poll, then what moved where.
demo: deps build
	$(GO) run ./infra/demo --popconn $(BIN)/popconn

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

# Packages whose tests run under the race detector in `make test` (the
# goroutines of the pipeline and the stores they share).
RACE_PKGS := ./internal/connector/... ./internal/ledger/... ./internal/archive/... ./internal/relay/...

# test: installs the servers, then runs every test with integration required
# (a missing server fails the run instead of skipping); RACE_PKGS with -race.
test: deps vet
	POPCONN_INTEGRATION=1 $(GO) test -count=1 -timeout 20m $$($(GO) list ./... | grep -vE '/internal/(connector|ledger|archive|relay)(/|$$)')
	POPCONN_INTEGRATION=1 $(GO) test -race -count=1 -timeout 20m $(RACE_PKGS)
	$(MAKE) --no-print-directory fuzz-short

unit:
	$(GO) test ./...

fuzz-short:
	@GO=$(GO) sh infra/fuzz-short.sh $(FUZZTIME) $(FUZZ_TARGETS)

fuzz:
	$(MAKE) fuzz-short FUZZTIME=5m

bench: deps
	POPCONN_INTEGRATION=1 $(GO) test -run='^$$' -bench=. -benchmem ./...

clean:
	rm -rf $(BIN) demo-data
