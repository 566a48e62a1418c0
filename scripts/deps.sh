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
  containerd containernetworking-plugins iproute2 nftables protobuf-compiler
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

# docker-compose v1 (Python), a client the network tests drive. Its last
# release wants PyYAML < 6, which no longer builds, so it is installed
# without its pins into a venv of its own, with versions it works with.
compose_venv=/opt/hull/compose
if ! command -v docker-compose >/dev/null; then
  echo "installing docker-compose 1.29.2 into $compose_venv" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if $sudo python3 -m venv "$compose_venv" >&2 \
    && $sudo "$compose_venv/bin/pip" install -q --no-deps "docker-compose==1.29.2" >&2 \
    && $sudo "$compose_venv/bin/pip" install -q "docker==6.1.3" "requests<2.32" dockerpty \
      docopt "jsonschema<4" "python-dotenv<1" texttable "websocket-client<1" distro PyYAML \
      setuptools >&2; then
    $sudo ln -sf "$compose_venv/bin/docker-compose" /usr/local/bin/docker-compose
  else
    echo "warning: docker-compose could not be installed; its tests will be skipped" >&2
  fi
fi
