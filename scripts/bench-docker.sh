#!/usr/bin/env bash
# Benchmark: the stock docker CLI against hulld. In one run, medians of
#   - `docker run --rm busybox true` through hulld, `hull run --rm busybox true`,
#     and `runc run` of the same rootfs (the reference for a container start);
#   - `docker exec C true` into a running container, against `runc exec` into a
#     running runc container.
# Prints medians and ratios against runc.
#
#   scripts/bench-docker.sh            RUNS=20 by default
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-20}"

scripts/deps.sh
command -v hyperfine >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine >&2
command -v jq >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >&2
command -v docker >/dev/null || { echo "error: the docker CLI is needed" >&2; exit 1; }
cargo build --release --locked -q -p hull -p hulld
agent=$(scripts/build-agent.sh --release)
kernel="$(guest/kernel/build.sh)/vmlinux"

work=$(mktemp -d /tmp/hull-bench.XXXXXX)
hulld_pid=
cleanup() {
  docker -H "unix://$work/hull.sock" rm -f bench-exec >/dev/null 2>&1 || true
  runc kill hull-bench-exec KILL 2>/dev/null || true
  runc delete -f hull-bench-exec 2>/dev/null || true
  [ -n "$hulld_pid" ] && kill "$hulld_pid" 2>/dev/null || true
  pkill -9 -f "$work" 2>/dev/null || true
  rm -rf "$work" "/dev/shm/hull-bench-$$"
}
trap cleanup EXIT

scripts/busybox-image.sh "$work/busybox.tar" >/dev/null
mkdir -p "$work/archive" "$work/bundle/rootfs" "$work/long/rootfs"
tar -xf "$work/busybox.tar" -C "$work/archive"
for layer in $(jq -r '.[0].Layers[]' "$work/archive/manifest.json"); do
  tar -xf "$work/archive/$layer" -C "$work/bundle/rootfs"
  tar -xf "$work/archive/$layer" -C "$work/long/rootfs"
done
(cd "$work/bundle" && runc spec)
jq '.process.args = ["true"] | .process.terminal = false' "$work/bundle/config.json" >"$work/bundle/config.tmp"
mv "$work/bundle/config.tmp" "$work/bundle/config.json"
(cd "$work/long" && runc spec)
jq '.process.args = ["sleep", "100000"] | .process.terminal = false' "$work/long/config.json" >"$work/long/config.tmp"
mv "$work/long/config.tmp" "$work/long/config.json"
runc run -d -b "$work/long" hull-bench-exec </dev/null >/dev/null 2>&1

accel=tcg
if [ -w /dev/kvm ] && [ ! -e /sys/module/kvm_pvm ]; then accel=kvm; fi
host="unix://$work/hull.sock"
target/release/hulld --root "$work/root" --host "$host" \
  --kernel "$kernel" --agent "$agent" --accel "$accel" \
  --template-dir "/dev/shm/hull-bench-$$" 2>"$work/hulld.log" &
hulld_pid=$!
while [ ! -S "$work/hull.sock" ]; do sleep 0.05; done
docker -H "$host" load -q -i "$work/busybox.tar" >/dev/null
target/release/hull -H "$host" run --rm busybox true
until target/release/hull -H "$host" info | grep -q "VM Template: ready"; do sleep 0.1; done
docker -H "$host" run -d --name bench-exec busybox sleep 100000 >/dev/null

echo "accelerator: $accel; $runs runs each" >&2
hyperfine -N --style basic --warmup 2 --runs "$runs" --export-json "$work/results.json" \
  -n "runc run (reference)" "runc run -b $work/bundle hull-bench" \
  -n "hull run --rm busybox true" "target/release/hull -H $host run --rm busybox true" \
  -n "docker run --rm busybox true (via hulld)" "docker -H $host run --rm busybox true" \
  -n "runc exec (reference)" "runc exec hull-bench-exec true" \
  -n "docker exec C true (via hulld)" "docker -H $host exec bench-exec true" >&2

echo
jq -r '
  (.results[0].median) as $run |
  (.results[3].median) as $exec |
  .results[] |
  (if (.command | test("exec")) then $exec else $run end) as $reference |
  "\(.command | .[0:42] | . + " " * (42 - length)) median \(.median * 1000 | floor) ms   \(.median / $reference * 10 | floor / 10)x runc"
' "$work/results.json"
