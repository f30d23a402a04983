# bench.mk — popconn compared with fetchmail, mpop and raw POP3 clients
# (one RETR at a time, and 16 pipelined: the ceiling) on this machine
# (issue 6; the RTT rows for "Throughput on a real network"). Included from
# the Makefile; separate from `make bench` (the Go benchmarks). The tools
# only this needs (fetchmail, mpop, GNU time, iproute2) are installed here,
# not by `make deps`, so `make test` never pays for them.
#
#   make bench-compare                        full run: 3 repetitions, ~25 min
#   make bench-compare BENCH_FLAGS=--quick    small workloads, 1 repetition
#   make bench-compare BENCH_FLAGS='--workloads a --tls plain'
#   make bench-compare BENCH_FLAGS='--rtt 20ms --workloads a'
#                                             the same behind delay proxies (infra/bench/delay.go):
#                                             POP3 and SMTP each at a 20 ms round trip
#   make bench-rtt                            loopback and 20 ms rows side by side, plain and POP3S,
#                                             3 repetitions, --quick workloads (a: 200 × 20 kB,
#                                             b: 20 × 1 MB) plus (a) 1,000 × 20 kB at loopback
#   make bench-compare BENCH_FLAGS='--sink postfix'
#                                             a private Postfix smtpd (discard transport, CHUNKING)
#                                             instead of smtp-sink
#   make bench-scale                          popconn over 10, 100 and 1,000 mailboxes (3 × 20 kB each)
#                                             at parallel_mailboxes 1, 4, 16, 64; ~15 min with 3 repetitions
#   make bench-scale BENCH_SCALE_FLAGS='--mailboxes 10,100 --reps 1'
#   make bench-lambda                         the Lambda handler (S3 on versitygw, DynamoDB Local, each behind
#                                             a 4 ms RTT proxy; POP3 and SMTP at 20 ms) beside local mode on
#                                             50 × 20 kB: wall time and the AWS requests in series per message
#                                             (infra/bench/lambda.go, series.go); 3 repetitions, ~2 min
#   make bench-lambda BENCH_LAMBDA_FLAGS='--reps 1 --aws-rtt 10ms'
#   POPCONN_BENCH_DELIVERIES_IN_FLIGHT=8 make bench-lambda
#                                             deliveries_in_flight (and POPCONN_BENCH_POP3_PIPELINE_DEPTH:
#                                             pop3_pipeline_depth) for both modes; also read by the other targets
#   make bench-fanout                         Mode=fanout under the Lambda RIE: one dispatcher and
#                                             POPCONN_FANOUT_WORKERS (4) workers behind an event source
#                                             mapping played against moto's SQS FIFO, POPCONN_FANOUT_MAILBOXES
#                                             (2,000) Dovecot mailboxes, S3 on versitygw, DynamoDB Local:
#                                             mailboxes per minute (per worker), worker ms and log bytes per
#                                             job, dispatcher ms per job; a delivering tick, then an idle one
#   make bench-profile                        CPU profile + execution trace of popconn on workload (a),
#                                             written under bin/bench-profile/
#
# Results: bench-results.md (bench-results-quick.md with --quick) and a .json
# of every run beside it; bench-lambda writes bench-results-lambda.md (it
# needs versitygw and DynamoDB Local: infra/install-deps.sh). Needs root for
# unshare -n (the quick-ACK rows); pass BENCH_FLAGS=--netns-tools= to skip
# those.

BENCH_FLAGS ?=
BENCH_RTT ?= 20ms
BENCH_SCALE_FLAGS ?= --reps 3
BENCH_LAMBDA_FLAGS ?= --reps 3
BENCH_PROFILE ?= $(BIN)/bench-profile/popconn-a.pprof

POPCONN_FANOUT_MAILBOXES ?= 2000
POPCONN_FANOUT_WORKERS ?= 4

.PHONY: bench-compare bench-rtt bench-profile bench-tools bench-scale bench-lambda bench-fanout

bench-tools: deps build
	bash infra/bench/install.sh
	$(GO) build -o $(BIN)/popconn-bench ./infra/bench

bench-compare: bench-tools
	$(BIN)/popconn-bench --popconn $(BIN)/popconn $(BENCH_FLAGS)

# The RTT targets: 200 × 20 kB and 20 × 1 MB at loopback and at
# $(BENCH_RTT), then 1,000 × 20 kB at loopback; 3 repetitions each, tools
# interleaved. Results: bench-results-rtt.md and bench-results-loopback.md.
bench-rtt: bench-tools
	$(BIN)/popconn-bench --popconn $(BIN)/popconn --quick --reps 3 --rtt 0,$(BENCH_RTT) --workloads a,b --out bench-results-rtt.md $(BENCH_FLAGS)
	$(BIN)/popconn-bench --popconn $(BIN)/popconn --reps 3 --workloads a --out bench-results-loopback.md $(BENCH_FLAGS)

# Results: bench-results-scale.md and .json (see infra/bench/scale.go).
bench-scale: bench-tools
	$(BIN)/popconn-bench scale --popconn $(BIN)/popconn $(BENCH_SCALE_FLAGS)

# Results: bench-results-lambda.md and .json (see infra/bench/lambda.go).
bench-lambda: bench-tools
	$(BIN)/popconn-bench lambda --popconn $(BIN)/popconn --out bench-results-lambda.md $(BENCH_LAMBDA_FLAGS)

bench-profile: bench-tools
	mkdir -p $(dir $(BENCH_PROFILE))
	$(BIN)/popconn-bench --popconn $(BIN)/popconn --cpuprofile $(BENCH_PROFILE) $(BENCH_FLAGS)
	$(GO) tool pprof -top -nodecount=30 $(BIN)/popconn-bench $(BENCH_PROFILE)
	$(GO) tool trace -pprof=syscall $(BENCH_PROFILE).trace > $(BENCH_PROFILE).syscall
	$(GO) tool pprof -top -nodecount=20 $(BENCH_PROFILE).syscall

# BenchmarkFanOut (internal/lambdafn/rie_test.go). Needs the servers of
# `make deps` and moto_server (preinstalled with this machine's python3).
bench-fanout: deps
	POPCONN_INTEGRATION=1 POPCONN_FANOUT_MAILBOXES=$(POPCONN_FANOUT_MAILBOXES) POPCONN_FANOUT_WORKERS=$(POPCONN_FANOUT_WORKERS) \
		$(GO) test -run='^$$' -bench=BenchmarkFanOut -benchtime=1x -timeout=90m ./internal/lambdafn/
