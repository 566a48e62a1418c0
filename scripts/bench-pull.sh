#!/usr/bin/env bash
# Benchmark: pulling a large image (a debootstrap'd Debian of about 200 MB)
# from a distribution registry on loopback. Measures, in the same run and from
# an empty store or directory each time:
#   - `hull pull` until its erofs rootfs is built (what a first `hull run` waits for),
#   - `hull pull` alone (download, verification and commit),
#   - `skopeo copy docker://… oci:DIR` of the same image (the reference).
# Prints the medians and the ratios to skopeo, and the erofs build's two
# steps (flattening the layers, mkfs.erofs) as hulld logs them.
#
#   scripts/bench-pull.sh         RUNS=5, SUITE=bookworm by default
#   HULL_BIN=DIR scripts/bench-pull.sh   use the hull and hulld in DIR, unbuilt
#
# The rootfs is cached outside the repository, under
# ${XDG_CACHE_HOME:-~/.cache}/hull-bench, keyed by suite. debootstrap uses
# DEBIAN_MIRROR, else the first Debian archive apt is configured with. Where
# no mirror answers, the image is made of random-content files instead, and
# the output says so.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-5}"
suite="${SUITE:-bookworm}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/hull-bench"
# python3 and perl bring the image to about 200 MB on top of minbase.
packages=python3,perl

scripts/deps.sh
for tool in debootstrap jq bc; do
  command -v "$tool" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >&2
done
bin="${HULL_BIN:-target/release}"
[ -n "${HULL_BIN:-}" ] || cargo build --release --locked -q -p hull -p hulld

work=$(mktemp -d /tmp/hull-bench-pull.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# --- the root filesystem, built once per suite ------------------------------
apt_mirror() {
  local uri
  uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $2 !~ /^\[/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
  echo "$uri"
}

mkdir -p "$cache"
rootfs_tar="$cache/debian-$suite-minbase-$packages.tar"
content="debootstrap --variant=minbase --include=$packages $suite"
if [ ! -s "$rootfs_tar" ]; then
  mirror="${DEBIAN_MIRROR:-$(apt_mirror)}"
  rootfs="$work/rootfs"
  echo "building the rootfs: $content from $mirror" >&2
  if [ -n "$mirror" ] && debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
    # Downloaded packages and apt's lists are no part of an image.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/*
    tar --numeric-owner -C "$rootfs" -cf "$rootfs_tar.tmp" .
    mv "$rootfs_tar.tmp" "$rootfs_tar"
  else
    echo "debootstrap could not reach a Debian mirror (see below); using random-content files" >&2
    tail -5 "$work/debootstrap.log" >&2 || true
    rootfs_tar="$cache/random-200m.tar"
    content="200 files of 1 MiB of random bytes"
    if [ ! -s "$rootfs_tar" ]; then
      mkdir -p "$rootfs/data"
      for i in $(seq 1 200); do head -c 1048576 /dev/urandom >"$rootfs/data/$i"; done
      tar --numeric-owner -C "$rootfs" -cf "$rootfs_tar.tmp" .
      mv "$rootfs_tar.tmp" "$rootfs_tar"
    fi
  fi
  rm -rf "$rootfs"
fi

# --- a docker-archive of one layer, pushed to a loopback registry ----------
archive="$work/archive"
mkdir -p "$archive/layer"
cp "$rootfs_tar" "$archive/layer/layer.tar"
diff_id=$(sha256sum "$archive/layer/layer.tar" | cut -d' ' -f1)
printf '{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z","config":{"Cmd":["/bin/bash"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$diff_id" >"$archive/config.json"
printf '[{"Config":"config.json","RepoTags":["bench/debian:%s"],"Layers":["layer/layer.tar"]}]' \
  "$suite" >"$archive/manifest.json"
tar -C "$archive" -cf "$work/image.tar" manifest.json config.json layer/layer.tar
rm -rf "$archive"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
registry="127.0.0.1:$port"
cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: $registry
EOF
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
until curl -fs "http://$registry/v2/" >/dev/null; do sleep 0.05; done
image="$registry/bench/debian:$suite"
skopeo copy --quiet --dest-tls-verify=false "docker-archive:$work/image.tar" "docker://$image"
rm -f "$work/image.tar"
compressed=$(skopeo inspect --raw --tls-verify=false "docker://$image" | jq "[.layers[].size] | add")
unpacked=$(stat -c %s "$rootfs_tar")

# --- the runs ---------------------------------------------------------------
now() { date +%s.%N; }
hull_times="$work/hull.txt"
pull_times="$work/pull.txt"
skopeo_times="$work/skopeo.txt"
for run in $(seq 1 "$runs"); do
  root="$work/hull-$run"
  socket="$work/hull-$run.sock"
  "$bin/hulld" --root "$root" --host "unix://$socket" 2>"$work/hulld-$run.log" &
  daemon=$!
  pids+=("$daemon")
  while [ ! -S "$socket" ]; do sleep 0.05; done
  start=$(now)
  "$bin/hull" -H "unix://$socket" pull -q "$image" >/dev/null
  pulled=$(now)
  # hulld builds the erofs rootfs right after the pull; poll for it.
  until curl -fs --unix-socket "$socket" http://hull/images/json | jq -e 'length > 0 and all(.[]; .RootfsReady)' >/dev/null; do
    sleep 0.02
  done
  built=$(now)
  echo "$pulled - $start" | bc >>"$pull_times"
  echo "$built - $start" | bc >>"$hull_times"
  # hulld logs the build's steps: the layers flattened, then mkfs.erofs.
  build_line=$(grep -a 'built erofs rootfs' "$work/hulld-$run.log" | tail -1)
  for step in flatten mkfs; do
    ms=$(sed -n "s/.* ${step}_ms=\([0-9]*\).*/\1/p" <<<"$build_line")
    [ -n "$ms" ] && echo "$ms / 1000" | bc -l >>"$work/$step.txt"
  done
  kill "$daemon"
  wait "$daemon" 2>/dev/null || true
  rm -rf "$root"

  dir="$work/oci-$run"
  start=$(now)
  skopeo copy --quiet --src-tls-verify=false "docker://$image" "oci:$dir:latest"
  done_at=$(now)
  echo "$done_at - $start" | bc >>"$skopeo_times"
  rm -rf "$dir"
  echo "run $run: hull pull+erofs $(tail -1 "$hull_times") s, hull pull $(tail -1 "$pull_times") s, skopeo $(tail -1 "$skopeo_times") s" >&2
done

median() { sort -n "$1" | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
hull_median=$(median "$hull_times")
pull_median=$(median "$pull_times")
skopeo_median=$(median "$skopeo_times")
echo
echo "image: $content; $((unpacked / 1048576)) MiB unpacked, $((compressed / 1048576)) MiB compressed, one layer; $runs runs each"
printf '%-42s median %6.2f s   %5.2fx skopeo\n' \
  "hull pull + erofs rootfs" "$hull_median" "$(echo "$hull_median / $skopeo_median" | bc -l)" \
  "hull pull (stored, verified)" "$pull_median" "$(echo "$pull_median / $skopeo_median" | bc -l)" \
  "skopeo copy docker:// oci: (reference)" "$skopeo_median" 1
if [ -s "$work/flatten.txt" ] && [ -s "$work/mkfs.txt" ]; then
  printf '  the erofs build after the pull: layers flattened %.2f s, mkfs.erofs %.2f s (medians)\n' \
    "$(median "$work/flatten.txt")" "$(median "$work/mkfs.txt")"
fi
