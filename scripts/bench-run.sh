#!/usr/bin/env bash
# Benchmark: start-to-exit time of `hull run --rm busybox true`, from the
# pool of resumed clones, from a VM template clone, from a clone of busybox's
# own image template and from a cold boot, against, in the same run, `runc run` of
# the same rootfs (the reference for a container start), a raw QEMU boot of
# the same kernel to a trivial init (the floor for a cold VM) and `hull exec`
# into a running container (what a process start costs in a VM whose code is
# translated: the bar for a pooled run). Prints medians and ratios.
#
#   scripts/bench-run.sh            RUNS=20 by default
#   BASELINE=<git revision> scripts/bench-run.sh
#                                   also runs a template clone of that
#                                   revision's hull and hulld (confinement's
#                                   cost: BASELINE=bb0b0c8, before it)
#   CLIENTS=4 THROUGHPUT_SECONDS=30 scripts/bench-run.sh
#                                   throughput: that many clients running
#                                   back to back for that long, against the
#                                   pooled hulld (its refills on the same
#                                   cores) and runc; THROUGHPUT_SECONDS=0
#                                   skips it
#   JAIL=compare scripts/bench-run.sh
#                                   also runs a template clone with QEMU's
#                                   cgroup and mount namespace off
#                                   (HULL_JAIL=off): their cost
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-20}"
clients="${CLIENTS:-4}"
throughput_seconds="${THROUGHPUT_SECONDS:-30}"

scripts/deps.sh
command -v hyperfine >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine >&2
command -v jq >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >&2
work=$(mktemp -d /tmp/hull-bench.XXXXXX)
daemon_pids=()
cleanup() {
  for pid in "${daemon_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# The baseline's binaries, built from its tree in the same target directory
# (so the dependencies are built once), then set aside.
if [ -n "${BASELINE:-}" ]; then
  mkdir -p "$work/baseline-src" "$work/baseline"
  git archive "$BASELINE" | tar -x -C "$work/baseline-src"
  (cd "$work/baseline-src" && cargo build --release --locked -q -p hull -p hulld --target-dir "$OLDPWD/target")
  cp target/release/hull target/release/hulld "$work/baseline/"
fi
cargo build --release --locked -q -p hull -p hulld
agent=$(scripts/build-agent.sh --release)
kernel="$(guest/kernel/build.sh)/vmlinux"

# The image, and its rootfs unpacked for runc.
scripts/busybox-image.sh "$work/busybox.tar" >/dev/null
mkdir -p "$work/archive" "$work/bundle/rootfs"
tar -xf "$work/busybox.tar" -C "$work/archive"
for layer in $(jq -r '.[0].Layers[]' "$work/archive/manifest.json"); do
  tar -xf "$work/archive/$layer" -C "$work/bundle/rootfs"
done
(cd "$work/bundle" && runc spec)
jq '.process.args = ["true"] | .process.terminal = false' "$work/bundle/config.json" >"$work/bundle/config.tmp"
mv "$work/bundle/config.tmp" "$work/bundle/config.json"

# The floor: the same microvm and kernel, an init that exits at once.
mkdir -p "$work/floor/dev"
cp /bin/busybox "$work/floor/busybox"
printf '#!/busybox sh\n/busybox reboot -f\n' >"$work/floor/init"
chmod +x "$work/floor/init"
mknod "$work/floor/dev/console" c 5 1
(cd "$work/floor" && find . | cpio -o -H newc --quiet) >"$work/floor.cpio"
accel=tcg
if [ -w /dev/kvm ] && [ ! -e /sys/module/kvm_pvm ]; then accel=kvm; fi
cat >"$work/floor.sh" <<FLOOR
exec qemu-system-x86_64 -M microvm,x-option-roms=off,isa-serial=on,rtc=on,acpi=off \\
  -accel $accel -cpu max -m 256M -smp 1 -nodefaults -no-user-config -nographic -no-reboot \\
  -kernel $kernel -initrd $work/floor.cpio -append "console=ttyS0 quiet panic=-1 reboot=t" \\
  -serial null </dev/null
FLOOR

# Hull: one daemon that clones its VM template, one that boots every VM cold.
start_daemon() { # NAME EXTRA-ARGS...; BIN: where hull and hulld are
  local name=$1 bin=${BIN:-target/release}
  shift
  "$bin/hulld" --root "$work/$name" --host "unix://$work/$name.sock" \
    --kernel "$kernel" --agent "$agent" --accel "$accel" \
    --template-dir "${TEMPLATE_DIR:-/dev/shm/hull-bench-$$}" "$@" 2>"$work/$name.log" &
  daemon_pids+=($!)
  while [ ! -S "$work/$name.sock" ]; do sleep 0.05; done
  "$bin/hull" -H "unix://$work/$name.sock" load -q -i "$work/busybox.tar"
  # Builds the erofs image, and the template where there is one.
  "$bin/hull" -H "unix://$work/$name.sock" run --rm busybox true
}
# Image templates off but where measured: a frequent image would get one
# and make the other rows image template clones.
start_daemon template --image-template-memory 0
start_daemon cold --no-templates
start_daemon pool --pool 2 --image-template-memory 0
until target/release/hull -H "unix://$work/template.sock" info | grep -q "VM Template: ready"; do sleep 0.1; done
# The image's own template: its rootfs mounted and read ahead before the save.
TEMPLATE_DIR="/dev/shm/hull-bench-image-$$" start_daemon image
target/release/hull -H "unix://$work/image.sock" template create busybox >/dev/null
jail_run=()
if [ "${JAIL:-}" = compare ]; then
  HULL_JAIL=off TEMPLATE_DIR="/dev/shm/hull-bench-nojail-$$" start_daemon nojail
  until target/release/hull -H "unix://$work/nojail.sock" info | grep -q "VM Template: ready"; do sleep 0.1; done
  jail_run=(-n "hull run --rm busybox true (template clone, no jail)"
    "target/release/hull -H unix://$work/nojail.sock run --rm busybox true")
fi
baseline_run=()
if [ -n "${BASELINE:-}" ]; then
  BIN="$work/baseline" TEMPLATE_DIR="/dev/shm/hull-bench-base-$$" start_daemon baseline
  until "$work/baseline/hull" -H "unix://$work/baseline.sock" info | grep -q "VM Template: ready"; do sleep 0.1; done
  baseline_run=(-n "hull run --rm busybox true (template clone, $BASELINE)"
    "$work/baseline/hull -H unix://$work/baseline.sock run --rm busybox true")
fi
# Before each pooled run, the pool is full again, as on a host that is not
# starting containers back to back.
cat >"$work/pool-full.sh" <<POOL
until target/release/hull -H unix://$work/pool.sock pool ls | awk 'NR > 1 && \$(NF - 1) != \$(NF - 2) { exit 1 }'; do
  sleep 0.05
done
POOL
bash "$work/pool-full.sh"
trap 'cleanup; rm -rf "/dev/shm/hull-bench-$$" "/dev/shm/hull-bench-base-$$" "/dev/shm/hull-bench-nojail-$$" "/dev/shm/hull-bench-image-$$"' EXIT

echo "accelerator: $accel; $runs runs each" >&2
hyperfine -N --style basic --warmup 2 --runs "$runs" --export-json "$work/results.json" \
  -n "runc run (reference)" "runc run -b $work/bundle hull-bench" \
  -n "raw QEMU boot to trivial init (floor)" "bash $work/floor.sh" \
  -n "hull run --rm busybox true (template clone)" "target/release/hull -H unix://$work/template.sock run --rm busybox true" \
  -n "hull run --rm busybox true (image template clone)" "target/release/hull -H unix://$work/image.sock run --rm busybox true" \
  -n "hull run --rm busybox true (cold boot)" "target/release/hull -H unix://$work/cold.sock run --rm busybox true" \
  "${jail_run[@]}" "${baseline_run[@]}" >&2
hyperfine -N --style basic --warmup 2 --runs "$runs" --export-json "$work/pool.json" \
  --prepare "bash $work/pool-full.sh" \
  -n "hull run --rm busybox true (from the pool)" "target/release/hull -H unix://$work/pool.sock run --rm busybox true" >&2
# What starting a process costs once its VM's code paths are translated:
# an exec into a running container, the bar for a pooled run.
running=$(target/release/hull -H "unix://$work/pool.sock" run -d busybox sleep 1d)
hyperfine -N --style basic --warmup 2 --runs "$runs" --export-json "$work/exec.json" \
  -n "hull exec CONTAINER true (running container)" "target/release/hull -H unix://$work/pool.sock exec $running true" >&2
target/release/hull -H "unix://$work/pool.sock" rm -f "$running" >/dev/null
jq -s '.[0].results += .[1].results + .[2].results | .[0]' "$work/results.json" "$work/pool.json" "$work/exec.json" >"$work/all.json"

echo
jq -r '
  (.results[0].median) as $runc |
  (.results[1].median) as $floor |
  .results[] |
  "\(.command | .[0:46] | . + " " * (46 - length)) median \(.median * 1000 | floor) ms   \(.median / $runc * 10 | floor / 10)x runc   \(.median / $floor * 100 | floor / 100)x floor"
' "$work/all.json"
jq -r '
  (.results[] | select(.command | endswith("(from the pool)")) | .median) as $pool |
  (.results[] | select(.command | startswith("hull exec")) | .median) as $exec |
  "from the pool / exec into a running container: \($pool / $exec * 100 | floor / 100)x"
' "$work/all.json"
jq -r '
  (.results[] | select(.command | endswith("(template clone)")) | .median) as $plain |
  (.results[] | select(.command | endswith("(image template clone)")) | .median) as $image |
  "image template clone / template clone: \($image / $plain * 100 | floor / 100)x"
' "$work/all.json"
if [ -n "${BASELINE:-}" ]; then
  jq -r --arg base "$BASELINE" '
    (.results[] | select(.command == "hull run --rm busybox true (template clone)") | .median) as $now |
    (.results[] | select(.command | endswith(", \($base))")) | .median) as $before |
    "template clone, this tree / \($base): \($now / $before * 100 | floor / 100)x (\($now * 1000 | floor) ms / \($before * 1000 | floor) ms)"
  ' "$work/all.json"
fi
if [ "${JAIL:-}" = compare ]; then
  jq -r '
    (.results[] | select(.command == "hull run --rm busybox true (template clone)") | .median) as $now |
    (.results[] | select(.command | endswith(", no jail)")) | .median) as $free |
    "template clone, jailed / no jail: \($now / $free * 100 | floor / 100)x (\($now * 1000 | floor) ms / \($free * 1000 | floor) ms)"
  ' "$work/all.json"
fi

# Throughput: CLIENTS clients each starting the next run as soon as the last
# ended, for THROUGHPUT_SECONDS, counting runs that exited 0. A pooled run's
# VM is refilled on the same cores, so this counts what the pool costs.
throughput() { # NAME COMMAND... (each client's number replaces {})
  local name=$1 pids=() client
  shift
  for client in $(seq "$clients"); do
    (
      done_runs=0
      end=$((SECONDS + throughput_seconds))
      while [ "$SECONDS" -lt "$end" ]; do
        if "${@//\{\}/$client}" >/dev/null 2>&1; then done_runs=$((done_runs + 1)); fi
      done
      echo "$done_runs" >"$work/throughput.$name.$client"
    ) &
    pids+=($!)
  done
  wait "${pids[@]}"
  cat "$work/throughput.$name".* | awk -v s="$throughput_seconds" '{ n += $1 } END { printf "%.1f", n / s }'
}
if [ "$throughput_seconds" -gt 0 ]; then
  echo "throughput: $clients clients for ${throughput_seconds}s each" >&2
  bash "$work/pool-full.sh"
  pooled_rate=$(throughput pool target/release/hull -H "unix://$work/pool.sock" run --rm busybox true)
  runc_rate=$(throughput runc runc run -b "$work/bundle" "hull-bench-{}")
  echo "throughput, $clients clients: runc run $runc_rate/s, hull run --rm from the pool $pooled_rate/s ($(awk -v a="$pooled_rate" -v b="$runc_rate" 'BEGIN { printf "%.2f", a / b }')x runc)"
fi
