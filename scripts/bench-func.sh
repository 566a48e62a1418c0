#!/usr/bin/env bash
# Benchmark: latency (p50, p99) of sync calls of a trivial function (`cat`)
# at 1, 4 and 16 concurrent clients, against `runc run` of the same command
# with the same stdin at the same concurrency in the same run; calls per
# second sustained; and the same calls with no pool and no template (every
# call a cold boot), to show what those buy. Prints figures on stdout and
# each step, timed, on stderr.
#
#   scripts/bench-func.sh        SECONDS_EACH=15 SUSTAIN=60 POOL=4 PROFILE=release by default
#
# PROFILE=debug measures the dev build (target/debug) instead of building a
# release one. Run it where VMs may start, and alone in its network
# namespace: it starts one hulld at a time, never two.
set -euo pipefail
cd "$(dirname "$0")/.."
each="${SECONDS_EACH:-15}"
sustain="${SUSTAIN:-60}"
pool="${POOL:-4}"
profile="${PROFILE:-release}"

step() { echo "[$(date +%T)] $*" >&2; }

scripts/deps.sh
command -v jq >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >&2
case "$profile" in
  release)
    step "building hull and hulld (release; minutes on a busy machine)"
    cargo build --release --locked -q -p hull -p hulld
    agent=$(scripts/build-agent.sh --release 2>/dev/null) ;;
  debug)
    # The whole workspace: the dev build's own features, so nothing rebuilds.
    cargo build --locked -q --workspace
    agent=$(scripts/build-agent.sh 2>/dev/null) ;;
  *) echo "PROFILE is release or debug, not $profile" >&2; exit 2 ;;
esac
bin="target/$profile"
kernel="$(guest/kernel/build.sh)/vmlinux"
accel=tcg
if [ -w /dev/kvm ] && [ ! -e /sys/module/kvm_pvm ]; then accel=kvm; fi

work=$(mktemp -d /tmp/hull-bench-func.XXXXXX)
daemon=""
stop_daemon() {
  if [ -n "$daemon" ]; then
    kill "$daemon" 2>/dev/null || true
    wait "$daemon" 2>/dev/null || true
    daemon=""
  fi
}
cleanup() {
  stop_daemon
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

# Fails with hulld's log unless `$@` succeeds within SECONDS.
within() {
  local seconds=$1 what=$2 deadline=$((SECONDS + $1))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "gave up after ${seconds}s waiting for $what; hulld's log ends:" >&2
      tail -n 30 "$work/$name.log" >&2
      exit 1
    fi
    sleep 0.2
  done
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
template_ready() { "${hull[@]}" info | grep -qx "VM Template: ready"; }
name=""
hull=()
start_daemon() { # NAME EXTRA-ARGS...: sets $url to the function's call URL
  local port
  name=$1
  shift
  port=$(free_port)
  step "starting hulld ($name: $*)"
  "$bin/hulld" --root "$work/$name" --host "unix://$work/$name.sock" \
    --kernel "$kernel" --agent "$agent" --accel "$accel" \
    --template-dir "/dev/shm/hull-bench-func-$$" --secrets-key "$work/secrets.key" \
    --func-listen "tcp://127.0.0.1:$port" "$@" 2>"$work/$name.log" &
  daemon=$!
  hull=("$bin/hull" -H "unix://$work/$name.sock")
  within 60 "hulld's socket" test -S "$work/$name.sock"
  "${hull[@]}" load -q -i "$work/busybox.tar"
  step "a first container"
  timeout 300 "${hull[@]}" run --rm busybox true >/dev/null
  url=$("${hull[@]}" func create --name cat --timeout 60s --max-concurrency 16 busybox cat | tail -n 1)
  case "$url" in
    http://*) step "function at $url" ;;
    *) echo "func create printed no call URL: $url" >&2; exit 1 ;;
  esac
}

echo "accelerator: $accel; $profile build; pool $pool; ${each}s per level, ${sustain}s sustained"
start_daemon pooled --pool "$pool"
step "waiting for the VM template"
within 600 "the VM template" template_ready
python3 scripts/bench-func/load.py pooled --url "$url" --warm-file "$work/warm.json" \
  --seconds "$each" --sustain "$sustain" --bundle "$work/bundle"
stop_daemon

start_daemon cold --no-templates --pool 0
python3 scripts/bench-func/load.py cold --url "$url" --warm-file "$work/warm.json"
