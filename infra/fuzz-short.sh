#!/bin/sh
# fuzz-short.sh FUZZTIME pkg:Target ... - run each fuzz target for FUZZTIME.
#
# Go 1.26's fuzz coordinator can report a bare "context deadline exceeded"
# failure when -fuzztime expires while a worker is mid-call
# (golang/go#75804, fixed in Go 1.27). A real finding always writes a
# failing input under testdata/fuzz/; such a bare deadline failure without
# one is retried once, and anything else fails the run.
set -u
fuzztime=$1
shift
go=${GO:-go}
for t in "$@"; do
	pkg=${t%%:*}
	name=${t##*:}
	echo "fuzz $pkg $name for $fuzztime"
	attempt=1
	while :; do
		out=$($go test -run='^$' -fuzz="^$name\$" -fuzztime="$fuzztime" "$pkg" 2>&1)
		rc=$?
		printf '%s\n' "$out" | tail -n 3
		[ "$rc" = 0 ] && break
		if [ "$attempt" = 1 ] && printf '%s\n' "$out" | grep -q 'context deadline exceeded' &&
			! printf '%s\n' "$out" | grep -q -e 'Failing input written' -e 'panic:' -e '_test.go:[0-9]'; then
			echo "fuzz $name: deadline race of the Go 1.26 fuzz coordinator (golang/go#75804), no failing input: running once more"
			attempt=2
			continue
		fi
		printf '%s\n' "$out"
		exit 1
	done
done
