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
# leaves the previous binary alone (lib/go-install.sh).
#
# Environment: DEST overrides the install directory; GO names the go
# command (default: go on PATH, else /usr/local/go/bin/go).
set -eu

MODULE=github.com/versity/versitygw
VERSION=v1.8.0
DEST=${DEST:-/usr/local/bin}

. "$(dirname "$0")/lib/go-install.sh"
go_install_pinned "$MODULE" cmd/versitygw "$VERSION" "$DEST"
