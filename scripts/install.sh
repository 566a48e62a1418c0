#!/usr/bin/env bash
# Installs Hull on this Debian machine and runs a first container:
# dependencies, a release build, the static guest agent, the guest kernel
# (built once, then cached), the busybox test image.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${PREFIX:-/usr/local}"

scripts/deps.sh
echo "building hull and hulld" >&2
cargo build --release --locked -p hull -p hulld
agent=$(scripts/build-agent.sh --release)
kernel_dir=$(guest/kernel/build.sh)

install -D -m 0755 target/release/hull "$prefix/bin/hull"
install -D -m 0755 target/release/hulld "$prefix/bin/hulld"
install -D -m 0755 "$agent" "$prefix/lib/hull/hull-agent"
install -D -m 0644 "$kernel_dir/vmlinux" "$prefix/share/hull/vmlinux"
echo "installed hull, hulld, the guest agent and kernel under $prefix" >&2

# A running hulld from an earlier install would keep the old binaries.
if [ -f /var/lib/hull/hulld.pid ] && kill "$(cat /var/lib/hull/hulld.pid)" 2>/dev/null; then
  sleep 0.5
fi

image=$(mktemp -d)/busybox.tar
scripts/busybox-image.sh "$image" >/dev/null
"$prefix/bin/hull" load -i "$image"
rm -rf "$(dirname "$image")"
"$prefix/bin/hull" run --rm busybox sh -c 'echo "hello from a Hull VM running kernel $(uname -r)"'
