#!/usr/bin/env bash
# Benchmark: latency (p50, p99) of sync calls of a trivial function (`cat`)
# at 1, 4 and 16 concurrent clients, against `runc run` of the same command
# with the same stdin at the same concurrency in the same run; calls per
# second sustained over 60 s; and the same calls with no pool and no
# template (every call a cold boot), to show what those buy. Prints figures.
#
#   scripts/bench-func.sh        SECONDS_EACH=15 SUSTAIN=60 POOL=4 by default
set -euo pipefail
cd "$(dirname "$0")/.."
each="${SECONDS_EACH:-15}"
sustain="${SUSTAIN:-60}"
pool="${POOL:-4}"

scripts/deps.sh
command -v jq >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >&2
cargo build --release --locked -q -p hull -p hulld
agent=$(scripts/build-agent.sh --release)
kernel="$(guest/kernel/build.sh)/vmlinux"
accel=tcg
if [ -w /dev/kvm ] && [ ! -e /sys/module/kvm_pvm ]; then accel=kvm; fi

work=$(mktemp -d /tmp/hull-bench-func.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work" "/dev/shm/hull-bench-func-$$"
}
trap cleanup EXIT

# The image, and its rootfs unpacked for runc, running `cat`.
scripts/busybox-image.sh "$work/busybox.tar" >/dev/null
mkdir -p "$work/archive" "$work/bundle/rootfs"
tar -xf "$work/busybox.tar" -C "$work/archive"
for layer in $(jq -r '.[0].Layers[]' "$work/archive/manifest.json"); do
  tar -xf "$work/archive/$layer" -C "$work/bundle/rootfs"
done
(cd "$work/bundle" && runc spec)
jq '.process.args = ["cat"] | .process.terminal = false' "$work/bundle/config.json" >"$work/bundle/config.tmp"
mv "$work/bundle/config.tmp" "$work/bundle/config.json"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start_daemon() { # NAME EXTRA-ARGS...: prints the function's call URL
  local name=$1 port
  shift
  port=$(free_port)
  target/release/hulld --root "$work/$name" --host "unix://$work/$name.sock" \
    --kernel "$kernel" --agent "$agent" --accel "$accel" \
    --template-dir "/dev/shm/hull-bench-func-$$" \
    --func-listen "tcp://127.0.0.1:$port" "$@" 2>"$work/$name.log" &
  pids+=($!)
  while [ ! -S "$work/$name.sock" ]; do sleep 0.05; done
  local hull=(target/release/hull -H "unix://$work/$name.sock")
  "${hull[@]}" load -q -i "$work/busybox.tar"
  "${hull[@]}" run --rm busybox true >/dev/null
  "${hull[@]}" func create --name cat --timeout 60s --max-concurrency 16 busybox cat | tail -n 1
}

echo "accelerator: $accel; pool $pool; ${each}s per level, ${sustain}s sustained" >&2
pooled=$(start_daemon pooled --pool "$pool")
until target/release/hull -H "unix://$work/pooled.sock" info | grep -q "VM Template: ready"; do sleep 0.1; done
cold=$(start_daemon cold --no-templates --pool 0)

python3 scripts/bench-func/load.py --work "$work" --seconds "$each" --sustain "$sustain" \
  --bundle "$work/bundle" --pooled "$pooled" --cold "$cold"
