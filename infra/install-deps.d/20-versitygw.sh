#!/bin/sh
# 20-versitygw.sh - install versitygw, the S3 gateway the S3 archive's
# integration tests run against (internal/testenv StartVersityGW).
#
# versitygw is built from source with the Go toolchain:
#   GOBIN=$DEST go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
# so the binary lands in $DEST/versitygw (default /usr/local/bin, on PATH,
# the first place the tests look). The module proxy and go's checksum
# database verify the source. Building takes a few minutes on 2 cores.
#
# Idempotent: it does nothing when $DEST/versitygw exists and its embedded
# build information (`go version -m`) names the pinned version. The build
# goes to a temporary directory and is moved into place, so a failed run
# leaves the previous binary alone.
#
# Environment: DEST overrides the install directory; GO names the go
# command (default: go on PATH, else /usr/local/go/bin/go).
set -eu

MODULE=github.com/versity/versitygw
VERSION=v1.8.0
DEST=${DEST:-/usr/local/bin}

GO=${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}
if [ ! -x "$GO" ]; then
	echo "$0: the go command is needed to build versitygw (set GO=/path/to/go)" >&2
	exit 1
fi

installed_version() {
	"$GO" version -m "$1" 2>/dev/null | awk '$1 == "mod" && $2 == "'"$MODULE"'" { print $3 }'
}

if [ -x "$DEST/versitygw" ] && [ "$(installed_version "$DEST/versitygw")" = "$VERSION" ]; then
	echo "versitygw $VERSION already installed in $DEST"
	exit 0
fi

mkdir -p "$DEST"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
# Outside any module, so go.mod files around do not matter.
cd "$tmp"
GOBIN="$tmp/bin" "$GO" install "$MODULE/cmd/versitygw@$VERSION"
got=$(installed_version "$tmp/bin/versitygw")
if [ "$got" != "$VERSION" ]; then
	echo "$0: built versitygw reports version '$got', want $VERSION" >&2
	exit 1
fi
install -m 0755 "$tmp/bin/versitygw" "$DEST/versitygw.new"
mv -f "$DEST/versitygw.new" "$DEST/versitygw"
echo "installed versitygw $VERSION in $DEST/versitygw"
