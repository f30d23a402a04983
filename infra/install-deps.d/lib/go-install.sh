# lib/go-install.sh - sourced (not run) by the installers of
# infra/install-deps.d that build a pinned Go command from the module proxy.
# install-deps.sh runs only install-deps.d/*.sh, not this subdirectory.
#
#   go_install_pinned MODULE CMDPATH VERSION DEST
#
# installs the command MODULE/CMDPATH@VERSION as DEST/<last element of
# CMDPATH> with `go install`: the module proxy and go's checksum database
# verify the source. It does nothing when that binary exists and its
# embedded build information (`go version -m`) names MODULE at VERSION.
# The build goes to a temporary directory outside any module and is moved
# into place, so a failed run leaves the previous binary alone.
#
# GO names the go command (default: go on PATH, else /usr/local/go/bin/go).

go_install_pinned() {
	gi_module=$1 gi_cmd=$2 gi_version=$3 gi_dest=$4
	gi_bin=${gi_cmd##*/}
	GO=${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}
	if [ ! -x "$GO" ]; then
		echo "$0: the go command is needed to build $gi_bin (set GO=/path/to/go)" >&2
		return 1
	fi

	if [ -x "$gi_dest/$gi_bin" ] && [ "$(go_installed_version "$gi_module" "$gi_dest/$gi_bin")" = "$gi_version" ]; then
		echo "$gi_bin $gi_version already installed in $gi_dest"
		return 0
	fi

	mkdir -p "$gi_dest"
	gi_tmp=$(mktemp -d)
	# Outside any module, so go.mod files around do not matter.
	if ! (cd "$gi_tmp" && GOBIN="$gi_tmp/bin" "$GO" install "$gi_module/$gi_cmd@$gi_version"); then
		rm -rf "$gi_tmp"
		return 1
	fi
	gi_got=$(go_installed_version "$gi_module" "$gi_tmp/bin/$gi_bin")
	if [ "$gi_got" != "$gi_version" ]; then
		echo "$0: built $gi_bin reports version '$gi_got', want $gi_version" >&2
		rm -rf "$gi_tmp"
		return 1
	fi
	install -m 0755 "$gi_tmp/bin/$gi_bin" "$gi_dest/$gi_bin.new"
	rm -rf "$gi_tmp"
	mv -f "$gi_dest/$gi_bin.new" "$gi_dest/$gi_bin"
	echo "installed $gi_bin $gi_version in $gi_dest/$gi_bin"
}

# go_installed_version MODULE BINARY prints the version of MODULE that
# BINARY was built from, or nothing.
go_installed_version() {
	"$GO" version -m "$2" 2>/dev/null | awk -v m="$1" '$1 == "mod" && $2 == m { print $3 }'
}
