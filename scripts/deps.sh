#!/usr/bin/env bash
# Installs what Hull needs to build and run on Debian: QEMU (8.2 or later), the kernel source
# and its build tools, erofs-utils, busybox-static for the test image, runc
# for the benchmark's reference, and the peers of the registry tests: the
# distribution registry, skopeo, htpasswd and curl. e2fsprogs formats the
# containers' writable layers; docker-py is a client the tests drive, and
# containerd (with ctr) the peer of the shim's tests. iproute2 and nftables
# make the bridges, taps and NAT of user-defined networks; prometheus scrapes
# hulld's metrics in their test. Skips apt entirely when all is present.
set -euo pipefail

packages=(
  linux-source erofs-utils busybox-static runc cpio
  build-essential flex bison bc libelf-dev libssl-dev xz-utils procps bsdutils
  docker-registry skopeo apache2-utils curl e2fsprogs python3-docker
  containerd containernetworking-plugins iproute2 nftables protobuf-compiler
  prometheus
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

# QEMU 8.2 or later: a template clone maps its memory file read-only
# (memory-backend-file readonly=on,rom=off), so no VM's QEMU can change what
# later clones load. Bookworm has 7.2; its backports suite carries 10.0.
qemu_version() {
  dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null | sed -E 's/^[0-9]+://; s/[^0-9.].*//'
}
qemu_recent() {
  local version major minor
  version=$(qemu_version)
  major=${version%%.*}
  minor=${version#*.}
  minor=${minor%%.*}
  [ -n "$version" ] && { [ "$major" -gt 8 ] || { [ "$major" -eq 8 ] && [ "$minor" -ge 2 ]; }; }
}
if ! qemu_recent; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  if [ "$codename" = bookworm ]; then
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
      echo "adding bookworm-backports to apt's sources for QEMU" >&2
      printf '%s\n' "Types: deb" "URIs: http://deb.debian.org/debian" \
        "Suites: bookworm-backports" "Components: main" \
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" |
        $sudo tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
    fi
    $sudo apt-get update -qq
    echo "installing qemu-system-x86 from bookworm-backports" >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      -t bookworm-backports qemu-system-x86 >&2
  else
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      qemu-system-x86 >&2
  fi
  qemu_recent || echo "warning: QEMU $(qemu_version) is older than 8.2: template clones cannot be confined, so VMs boot cold" >&2
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
