# Reliability suite (internal/reliability). Included from the Makefile.
#
#   make reliability        long run: the popconn binary killed 50 times over
#                           500 messages, every fault scenario, a 100 MB message
#   make reliability-short  the same scenarios at `go test` size
#
# RELIABILITY_FLAGS passes options to the harness, e.g.
#   make reliability RELIABILITY_FLAGS='--seed 42 --run kills'

RELIABILITY_FLAGS ?=

.PHONY: reliability reliability-short

reliability: deps build
	$(GO) run ./infra/reliability --popconn $(BIN)/popconn $(RELIABILITY_FLAGS)

reliability-short: deps build
	$(GO) run ./infra/reliability --popconn $(BIN)/popconn --short $(RELIABILITY_FLAGS)
