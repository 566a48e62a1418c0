#!/usr/bin/env bash
# Builds hull-agent, the guest's PID 1, as a static binary and prints its path.
#
# Usage: scripts/build-agent.sh [--release]
#
# HULL_GUEST_PACKAGE=hull-test-guest builds the end-to-end tests' hostile
# guest the same way instead.
#
# glibc's crt-static stands in for musl (this toolchain has no musl target).
# The explicit --target keeps the flag off build scripts and proc macros,
# which must stay dynamically linked to load into the host's cargo.
set -euo pipefail

target=x86_64-unknown-linux-gnu
profile=debug
args=()
flags="-C target-feature=+crt-static"
case "${1:-}" in
    # Symbols are dead weight in every initramfs; panics still name file and line.
    --release) profile=release; args+=(--release); flags+=" -C strip=symbols" ;;
    # Debug info alone is most of a debug build; the guest has no debugger.
    "") flags+=" -C strip=debuginfo" ;;
    *) echo "usage: $0 [--release]" >&2; exit 2 ;;
esac

package="${HULL_GUEST_PACKAGE:-hull-agent}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

RUSTFLAGS="${RUSTFLAGS:-} $flags" \
    cargo build -p "$package" --target "$target" "${args[@]}" >&2

target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
binary="$target_dir/$target/$profile/$package"

if readelf -l "$binary" | grep -q 'INTERP'; then
    echo "error: $binary has an ELF interpreter: it is not statically linked" >&2
    exit 1
fi
echo "$binary"
