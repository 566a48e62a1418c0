#!/usr/bin/env bash
# Builds Hull's guest kernel from the distribution's linux-source package and
# hull.config, cached outside the repository by the hash of its inputs.
# Prints the path of the cached kernel directory (vmlinux, bzImage) on stdout.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
fragment="$here/hull.config"
cache_root="${HULL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hull}/kernel"

tarball=$(ls /usr/src/linux-source-*.tar.xz 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$tarball" ]; then
  echo "error: no /usr/src/linux-source-*.tar.xz; install it with: apt-get install linux-source" >&2
  exit 1
fi
package=$(basename "$tarball" .tar.xz)
version=$(dpkg-query -W -f='${Version}' "$package" 2>/dev/null || stat -c %s "$tarball")
key=$(cat "$fragment" "$0" | { cat; echo "$package $version"; } | sha256sum | cut -c1-16)
out="$cache_root/$key"

if [ -f "$out/vmlinux" ] && [ -f "$out/bzImage" ]; then
  echo "$out"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/hull-kernel.XXXXXX")
trap 'rm -rf "$work"' EXIT
log="$work/build.log"
echo "building the guest kernel ($package $version, config $key); a few minutes on 2 cores" >&2
tar -xf "$tarball" -C "$work"
src="$work/$package"

# microvm runs without an RTC (rtc=off: its IRQ would collide with a virtio
# device's), and x86 reads the missing CMOS clock at boot until a 1 s
# timeout runs out: a third of a cold boot. A real RTC answers within a few
# ms, so 10 ms is plenty; hulld sets the guest's clock itself.
rtc="$src/arch/x86/kernel/rtc.c"
sed -i 's/mc146818_get_time(&tm, 1000)/mc146818_get_time(\&tm, 10)/' "$rtc"
if ! grep -q 'mc146818_get_time(&tm, 10)' "$rtc"; then
  echo "error: cannot shorten the CMOS clock's timeout in $rtc; has the source changed?" >&2
  exit 1
fi

make -C "$src" -s tinyconfig >>"$log" 2>&1
"$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$fragment" >>"$log" 2>&1
make -C "$src" -s olddefconfig >>"$log" 2>&1

# Every option the fragment sets must survive olddefconfig; a dropped one means
# a missing dependency, which would otherwise surface as a guest that cannot boot.
missing=$(grep -E '^CONFIG_[A-Z0-9_]+=' "$fragment" | while read -r line; do
  grep -qx "$line" "$src/.config" || echo "$line"
done)
if [ -n "$missing" ]; then
  echo "error: these options of hull.config did not take effect (missing dependencies?):" >&2
  echo "$missing" >&2
  exit 1
fi

make -C "$src" -j"$(nproc)" bzImage >>"$log" 2>&1 &
build=$!
while kill -0 "$build" 2>/dev/null; do
  sleep 10
  # make's temporary files come and go under find: its complaints about
  # them must not end the script (and its trap remove the tree) mid-build.
  done_objs=$(find "$src" -name '*.o' 2>/dev/null | wc -l || true)
  echo "  kernel build: $done_objs objects compiled" >&2
done
if ! wait "$build"; then
  tail -n 40 "$log" >&2
  echo "error: the kernel build failed; the log's end is above" >&2
  exit 1
fi

mkdir -p "$out.tmp"
cp "$src/vmlinux" "$src/arch/x86/boot/bzImage" "$src/.config" "$out.tmp/"
echo "$package $version" >"$out.tmp/source"
rm -rf "$out" && mv "$out.tmp" "$out"
echo "guest kernel ready: $out" >&2
echo "$out"
