#!/usr/bin/env bash
# Benchmark of containerd-shim-hull-v2 under the distribution's containerd:
# the time of `ctr run --rm busybox true` in a sandbox VM cloned from its
# template and booted cold, against containerd's own runc shim in the same
# run, and the host memory an idle sandbox costs (the pod overhead to
# declare in a RuntimeClass): its QEMU's and its shim's PSS. Prints figures
# only.
#
#   scripts/bench-shim.sh            RUNS=10, SANDBOXES=4 by default
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-10}"
sandboxes="${SANDBOXES:-4}"

scripts/deps.sh
command -v hyperfine >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine >&2
cargo build --release --locked -q -p containerd-shim-hull
agent=$(scripts/build-agent.sh --release)
kernel="$(guest/kernel/build.sh)/vmlinux"

work=$(mktemp -d /tmp/hull-bench-shim.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # Shims outlive their containerd by design; these are the benchmark's own.
  pkill -KILL -f "containerd-shim-hull-v2 .*$work/" 2>/dev/null || true
  pkill -f "qemu-system.*$work/" 2>/dev/null || true
  sleep 1
  rm -rf "$work"
}
trap cleanup EXIT
scripts/busybox-image.sh "$work/busybox.tar" >/dev/null
image=docker.io/library/busybox:latest

# One containerd per kind of sandbox start: templates on or off.
start_containerd() { # NAME TEMPLATES
  local dir=$work/$1
  mkdir -p "$dir"
  cat >"$dir/shim.toml" <<SHIM
run_root = "$dir/vms"
cache_dir = "$dir/cache"
template_dir = "/dev/shm/hull-bench-shim-$$-$1"
templates = $2
kernel = "$kernel"
agent = "$agent"
SHIM
  cat >"$dir/config.toml" <<CONFIG
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
CONFIG
  PATH="$PWD/target/release:$PATH" HULL_SHIM_CONFIG="$dir/shim.toml" \
    containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
  pids+=($!)
  until ctr --address "$dir/containerd.sock" version >/dev/null 2>&1; do sleep 0.1; done
  ctr --address "$dir/containerd.sock" image import "$work/busybox.tar" >/dev/null
  # The first sandbox of its size boots cold and leaves the template.
  ctr --address "$dir/containerd.sock" run --rm --runtime io.containerd.hull.v2 "$image" warm true
}
start_containerd template true
start_containerd cold false
trap 'cleanup; rm -rf /dev/shm/hull-bench-shim-$$-*' EXIT
until ls /dev/shm/hull-bench-shim-$$-template/*/*/ready >/dev/null 2>&1; do sleep 0.2; done

ctr_run() { # NAME RUNTIME
  echo "ctr --address $work/$1/containerd.sock run --rm --runtime $2 $image bench-$1 true"
}
echo "$runs runs each" >&2
hyperfine -N --style basic --warmup 1 --runs "$runs" --export-json "$work/results.json" \
  -n "ctr run --rm, runc shim (reference)" "$(ctr_run cold io.containerd.runc.v2)" \
  -n "ctr run --rm, hull shim, template clone" "$(ctr_run template io.containerd.hull.v2)" \
  -n "ctr run --rm, hull shim, cold boot" "$(ctr_run cold io.containerd.hull.v2)" >&2

# Idle sandboxes: what each costs the host.
pss_kib() { awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup"; }
address=$work/template/containerd.sock
for n in $(seq "$sandboxes"); do
  ctr --address "$address" run -d --runtime io.containerd.hull.v2 "$image" "idle-$n" sleep 100000 >/dev/null
done
sleep 5
qemu_total=0 shim_total=0
for pid in $(pgrep -f "qemu-system.*$work/template/vms/"); do
  qemu_total=$((qemu_total + $(pss_kib "$pid")))
done
for pid in $(pgrep -f "containerd-shim-hull-v2.*$address"); do
  shim_total=$((shim_total + $(pss_kib "$pid")))
done
for n in $(seq "$sandboxes"); do
  ctr --address "$address" task kill -s KILL "idle-$n" >/dev/null
done
for n in $(seq "$sandboxes"); do
  until ctr --address "$address" task rm "idle-$n" >/dev/null 2>&1; do sleep 0.2; done
  ctr --address "$address" container rm "idle-$n" >/dev/null
done

echo
jq -r '
  (.results[0].median) as $runc |
  .results[] |
  "\(.command | . + " " * (42 - length)) median \(.median * 1000 | floor) ms   \(.median / $runc * 10 | floor / 10)x runc"
' "$work/results.json"
echo "idle sandbox ($sandboxes at once, template clones): QEMU PSS $((qemu_total / sandboxes / 1024)) MiB, shim PSS $((shim_total / sandboxes / 1024)) MiB each"
