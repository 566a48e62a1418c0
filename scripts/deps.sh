#!/usr/bin/env bash
# Installs what Hull needs to build and run on Debian: QEMU, the kernel source
# and its build tools, erofs-utils, busybox-static for the test image, runc
# for the benchmark's reference, and the peers of the registry tests: the
# distribution registry, skopeo, htpasswd and curl. e2fsprogs formats the
# containers' writable layers; docker-py is a client the tests drive, and
# containerd (with ctr) the peer of the shim's tests. iproute2 and nftables
# make the bridges, taps and NAT of user-defined networks. Skips apt
# entirely when all is present.
set -euo pipefail

packages=(
  qemu-system-x86 linux-source erofs-utils busybox-static runc cpio
  build-essential flex bison bc libelf-dev libssl-dev xz-utils procps bsdutils
  docker-registry skopeo apache2-utils curl e2fsprogs python3-docker
  containerd iproute2 nftables
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if ! command -v cargo >/dev/null; then
  echo "error: cargo not found: install a Rust toolchain (rustup) first" >&2
  exit 1
fi
