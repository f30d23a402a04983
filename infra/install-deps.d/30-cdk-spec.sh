#!/bin/sh
# 30-cdk-spec.sh - fetch the CloudFormation resource and metric specification
# that infra/templatetest checks template.yaml against: the npm package
# @aws-cdk/aws-service-spec (Apache-2.0, the database the AWS CDK generates
# its L1 constructs from), pinned below. Only its data file is kept:
#
#   $DEST/<version>/db.json.gz, package.json, LICENSE
#   $DEST/current -> <version>
#
# DEST defaults to /usr/local/share/popconnector/aws-service-spec; the test
# reads $POPCONN_CDK_SPEC (a db.json.gz path) or $DEST/current/db.json.gz.
#
# Idempotent: nothing is downloaded when the pinned version is present.
# Needs npm (Node.js); installs Debian's npm when it is missing.
set -eu

VERSION=0.1.216
DEST=${POPCONN_CDK_SPEC_DIR:-/usr/local/share/popconnector/aws-service-spec}

if [ -s "$DEST/$VERSION/db.json.gz" ] && gzip -t "$DEST/$VERSION/db.json.gz" 2>/dev/null; then
	ln -sfn "$VERSION" "$DEST/current"
	echo "aws-service-spec $VERSION already in $DEST"
	exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
	if [ "$(id -u)" != 0 ]; then
		echo "$0: npm is missing; run as root to install it" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	[ "${APT_UPDATED:-0}" = 1 ] || apt-get update
	apt-get install -y --no-install-recommends npm
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
(cd "$tmp" && npm pack --silent "@aws-cdk/aws-service-spec@$VERSION" >/dev/null)
tgz=$(ls "$tmp"/*.tgz)
tar -xzf "$tgz" -C "$tmp" package/db.json.gz package/package.json package/LICENSE
gzip -t "$tmp/package/db.json.gz"
got=$(node -p 'require(process.argv[1]).version' "$tmp/package/package.json")
if [ "$got" != "$VERSION" ]; then
	echo "$0: npm gave version '$got', want $VERSION" >&2
	exit 1
fi

mkdir -p "$DEST"
rm -rf "$DEST/$VERSION.partial"
mkdir "$DEST/$VERSION.partial"
mv "$tmp/package/db.json.gz" "$tmp/package/package.json" "$tmp/package/LICENSE" "$DEST/$VERSION.partial/"
chmod 0644 "$DEST/$VERSION.partial/"*
rm -rf "${DEST:?}/$VERSION"
mv "$DEST/$VERSION.partial" "$DEST/$VERSION"
ln -sfn "$VERSION" "$DEST/current"
echo "installed aws-service-spec $VERSION in $DEST"
