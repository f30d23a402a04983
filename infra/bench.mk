# bench.mk — popconn compared with fetchmail and a raw POP3 client on this
# machine (issue 6). Included from the Makefile; separate from `make bench`
# (the Go benchmarks). The tools only this needs (fetchmail, GNU time,
# iproute2) are installed here, not by `make deps`, so `make test` never
# pays for them.
#
#   make bench-compare                        full run: 3 repetitions, ~20 min
#   make bench-compare BENCH_FLAGS=--quick    small workloads, 1 repetition
#   make bench-compare BENCH_FLAGS='--workloads a --tls plain'
#   make bench-scale                          popconn over 10, 100 and 1,000 mailboxes (3 × 20 kB each)
#                                             at parallel_mailboxes 1, 4, 16, 64; ~15 min with 3 repetitions
#   make bench-scale BENCH_SCALE_FLAGS='--mailboxes 10,100 --reps 1'
#   make bench-profile                        CPU profile + execution trace of popconn on workload (a),
#                                             written under bin/bench-profile/
#
# Results: bench-results.md (bench-results-quick.md with --quick) and a .json
# of every run beside it. Needs root for unshare -n (the quick-ACK rows);
# pass BENCH_FLAGS=--netns-tools= to skip those.

BENCH_FLAGS ?=
BENCH_SCALE_FLAGS ?= --reps 3
BENCH_PROFILE ?= $(BIN)/bench-profile/popconn-a.pprof

.PHONY: bench-compare bench-profile bench-tools bench-scale

bench-tools: deps build
	bash infra/bench/install.sh
	$(GO) build -o $(BIN)/popconn-bench ./infra/bench

bench-compare: bench-tools
	$(BIN)/popconn-bench --popconn $(BIN)/popconn $(BENCH_FLAGS)

# Results: bench-results-scale.md and .json (see infra/bench/scale.go).
bench-scale: bench-tools
	$(BIN)/popconn-bench scale --popconn $(BIN)/popconn $(BENCH_SCALE_FLAGS)

bench-profile: bench-tools
	mkdir -p $(dir $(BENCH_PROFILE))
	$(BIN)/popconn-bench --popconn $(BIN)/popconn --cpuprofile $(BENCH_PROFILE) $(BENCH_FLAGS)
	$(GO) tool pprof -top -nodecount=30 $(BIN)/popconn-bench $(BENCH_PROFILE)
	$(GO) tool trace -pprof=syscall $(BENCH_PROFILE).trace > $(BENCH_PROFILE).syscall
	$(GO) tool pprof -top -nodecount=20 $(BENCH_PROFILE).syscall
