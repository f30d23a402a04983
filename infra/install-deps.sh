#!/bin/sh
# install-deps.sh - install the system packages popconnector's integration
# tests need, on a fresh Debian (12 "bookworm" or later), as root.
#
#   dovecot-core, dovecot-pop3d  the POP3 server (internal/testenv StartDovecot)
#   postfix                      for /usr/sbin/smtp-sink (StartSMTPSink)
#
# The tests start private, unprivileged-port instances themselves; this
# script does NOT configure or start the system Dovecot or Postfix. While it
# installs, a temporary /usr/sbin/policy-rc.d stops package scripts from
# starting the system daemons, and Postfix is preseeded with
# "No configuration".
#
# Idempotent: only missing packages are installed, and `apt-get update` runs
# once, only when something is missing.
#
# Usage: infra/install-deps.sh [--check]
#   --check  list missing packages and exit 1 if any; change nothing.
#
# Later additions (DynamoDB Local, versitygw, ...) go into
# infra/install-deps.d/NN-name.sh: every executable *.sh file there is run
# in name order after the packages above, with APT_UPDATED=1 exported when
# this run already ran apt-get update. Each must be idempotent itself.
set -eu

PACKAGES="dovecot-core dovecot-pop3d postfix"
HERE=$(cd "$(dirname "$0")" && pwd)

check_only=0
case "${1:-}" in
--check) check_only=1 ;;
"") ;;
*)
	echo "usage: $0 [--check]" >&2
	exit 2
	;;
esac

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=""
for p in $PACKAGES; do
	installed "$p" || missing="$missing $p"
done
missing=${missing# }

if [ "$check_only" = 1 ]; then
	if [ -n "$missing" ]; then
		echo "missing: $missing"
		exit 1
	fi
	echo "all present: $PACKAGES"
	exit 0
fi

if [ "$(id -u)" != 0 ]; then
	echo "$0: run as root (missing: ${missing:-none})" >&2
	exit 1
fi

APT_UPDATED=0
if [ -n "$missing" ]; then
	export DEBIAN_FRONTEND=noninteractive
	# Postfix: install the binaries only, no mail system configuration.
	printf '%s\n' \
		"postfix postfix/main_mailer_type select No configuration" \
		"postfix postfix/mailname string localhost" | debconf-set-selections

	# Keep invoke-rc.d from starting dovecot/postfix during installation.
	# Only a policy-rc.d we created is removed again.
	our_policy=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\n# temporary, from popconnector infra/install-deps.sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		our_policy=1
	fi
	cleanup() {
		if [ "$our_policy" = 1 ]; then
			rm -f /usr/sbin/policy-rc.d
			our_policy=0
		fi
	}
	trap cleanup EXIT INT TERM

	apt-get update
	APT_UPDATED=1
	# shellcheck disable=SC2086 # word splitting of the package list is intended
	apt-get install -y --no-install-recommends $missing
	cleanup
	trap - EXIT INT TERM
	echo "installed: $missing"
else
	echo "already installed: $PACKAGES"
fi

# Sanity: what the tests look for.
for f in /usr/sbin/dovecot /usr/sbin/smtp-sink; do
	if [ ! -x "$f" ]; then
		echo "$0: $f missing after installation" >&2
		exit 1
	fi
done
for u in dovecot dovenull; do
	if ! getent passwd "$u" >/dev/null; then
		echo "$0: system user $u missing (created by dovecot-core)" >&2
		exit 1
	fi
done

# Hooks for later additions.
export APT_UPDATED
if [ -d "$HERE/install-deps.d" ]; then
	for hook in "$HERE"/install-deps.d/*.sh; do
		[ -x "$hook" ] || continue
		echo "running $hook"
		"$hook"
	done
fi
