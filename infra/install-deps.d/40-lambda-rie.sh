#!/bin/sh
# 40-lambda-rie.sh - install the AWS Lambda Runtime Interface Emulator, which
# the Lambda integration tests run the function's bootstrap under
# (internal/testenv StartLambdaRIE).
#
# The emulator is built from source with the Go toolchain, from the module
# proxy (there is no tagged release there, so the pseudo-version is pinned):
#   GOBIN=$DEST go install \
#     github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@VERSION
# so the binary lands in $DEST/aws-lambda-rie (default /usr/local/bin, on
# PATH, the first place the tests look). It needs no replace directive and
# no special GOFLAGS; the module asks for Go 1.26.6 or later. Building takes
# about ten seconds on 2 cores.
#
# Idempotent, and a failed run leaves the previous binary alone: see
# lib/go-install.sh.
#
# Environment: DEST overrides the install directory; GO names the go
# command (default: go on PATH, else /usr/local/go/bin/go).
set -eu

MODULE=github.com/aws/aws-lambda-runtime-interface-emulator
VERSION=v0.0.0-20261030222936-bef5c4ba774d
DEST=${DEST:-/usr/local/bin}

. "$(dirname "$0")/lib/go-install.sh"
go_install_pinned "$MODULE" cmd/aws-lambda-rie "$VERSION" "$DEST"
