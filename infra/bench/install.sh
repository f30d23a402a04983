#!/bin/sh
# install.sh - the system packages only the fetchmail comparison benchmark
# (infra/bench, `make bench-compare`) needs, on Debian, as root. Kept out of
# infra/install-deps.sh so that `make test` never pays for them.
#
#   fetchmail  the tool popconn is compared with (Debian's build)
#   mpop       the fetch-side peer: a POP3 client with pipelining, fetching
#              into a maildir (Debian's build)
#   time       GNU /usr/bin/time -v: wall, CPU and peak RSS of each run
#   iproute2   `ip`, to switch on quick ACKs inside a private network namespace
#   util-linux `unshare` (essential on Debian; listed for completeness)
#
# Idempotent: installs only what is missing; `apt-get update` runs only then.
set -eu

PACKAGES="fetchmail mpop time iproute2 util-linux"

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=""
for p in $PACKAGES; do
	installed "$p" || missing="$missing $p"
done
missing=${missing# }

if [ -z "$missing" ]; then
	echo "bench deps already installed: $PACKAGES"
else
	if [ "$(id -u)" != 0 ]; then
		echo "$0: run as root to install: $missing" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update
	# shellcheck disable=SC2086 # word splitting of the package list is intended
	apt-get install -y --no-install-recommends $missing
	echo "installed: $missing"
fi

for f in /usr/bin/fetchmail /usr/bin/mpop /usr/bin/time /usr/bin/unshare; do
	if [ ! -x "$f" ]; then
		echo "$0: $f missing after installation" >&2
		exit 1
	fi
done
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || {
	echo "$0: ip (iproute2) missing after installation" >&2
	exit 1
}
