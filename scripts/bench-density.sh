#!/usr/bin/env bash
# Benchmark: host memory per idle container VM and how many fit. Prints
# figures, asserts nothing. In one run, against a hulld it starts in a
# temporary root (VM size S1 unless MEMORY/CPUS say otherwise):
#   (a) host memory per idle container (`hull run -d busybox sleep …`): the
#       PSS of its QEMU (/proc/PID/smaps_rollup) after a cold boot and as a
#       clone of the VM template, with the private part and the guest's own
#       view (MemTotal/MemAvailable from `hull exec … cat /proc/meminfo`);
#   (b) density: idle template clones started one after another until N are
#       running or the host's MemAvailable falls under MARGIN_MIB, with the
#       host memory they use in total and per container, and the CPU they
#       take while idle;
#   (c) creation rate: idle containers started by PARALLEL clients for
#       RATE_SECONDS, in containers per second.
# Then every container is removed.
#
#   scripts/bench-density.sh
#     N=50 RATE_SECONDS=60 PARALLEL=2 MARGIN_MIB=4096 SAMPLES=3 SETTLE=10
#     IDLE_SECONDS=30 (the window idle CPU is measured over)
#     CPUS=1 MEMORY=64; N=0 or RATE_SECONDS=0 skip (b) or (c).
#     HULL_TCG_TB_SIZE is passed on to hulld (TCG's translation cache, MiB).
#     HULL_BIN_DIR=dir uses the hull and hulld found there instead of building.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${N:-50}"
rate_seconds="${RATE_SECONDS:-60}"
parallel="${PARALLEL:-2}"
margin_mib="${MARGIN_MIB:-4096}"
samples="${SAMPLES:-3}"
settle="${SETTLE:-10}"
idle_seconds="${IDLE_SECONDS:-30}"
cpus="${CPUS:-1}"
memory="${MEMORY:-64}"

scripts/deps.sh
if [ -n "${HULL_BIN_DIR:-}" ]; then
  bin=$HULL_BIN_DIR
else
  cargo build --release --locked -q -p hull -p hulld
  bin=target/release
fi
agent=$(scripts/build-agent.sh --release)
kernel="$(guest/kernel/build.sh)/vmlinux"

work=$(mktemp -d /tmp/hull-density.XXXXXX)
templates="/dev/shm/hull-density-$$"
daemon_pids=()

# Each container's QEMU writes its pid in its run directory: only those
# processes are measured and, at the end, killed.
qemu_pids() { # ROOT
  cat "$1"/vms/*/qemu.pid 2>/dev/null | while read -r pid; do
    [ -d "/proc/$pid" ] && echo "$pid"
  done
  return 0
}
cleanup() {
  # Removes everything, whatever fails on the way.
  set +e
  for name in clones cold; do
    [ -S "$work/$name.sock" ] && remove_all "$name" 2>/dev/null
  done
  for pid in "${daemon_pids[@]}"; do kill "$pid" 2>/dev/null; done
  for name in clones cold; do
    pid=$(cat "$work/$name/hulld.pid" 2>/dev/null) && kill "$pid" 2>/dev/null
    for pid in $(qemu_pids "$work/$name"); do kill -9 "$pid" 2>/dev/null; done
  done
  rm -rf "$work" "$templates" "$templates-images"
}
trap cleanup EXIT

accel=tcg
if [ -w /dev/kvm ] && [ ! -e /sys/module/kvm_pvm ]; then accel=kvm; fi
scripts/busybox-image.sh "$work/busybox.tar" >/dev/null

on() { # DAEMON ARGS...: hull against one of this benchmark's daemons
  local name=$1
  shift
  # Were the daemon gone, the one hull would start stays in this root.
  HULL_ROOT="$work/$name" "$bin/hull" -H "unix://$work/$name.sock" "$@"
}
start_daemon() { # NAME EXTRA-ARGS...
  local name=$1
  shift
  "$bin/hulld" --root "$work/$name" --host "unix://$work/$name.sock" \
    --kernel "$kernel" --agent "$agent" --accel "$accel" \
    --cpus "$cpus" --memory "$memory" --template-dir "${TEMPLATES:-$templates}" "$@" 2>"$work/$name.log" &
  daemon_pids+=($!)
  while [ ! -S "$work/$name.sock" ]; do sleep 0.05; done
  on "$name" load -q -i "$work/busybox.tar" >/dev/null
  # Builds the erofs image, and the template where there is one.
  on "$name" run --rm busybox true
}

remove_all() { # DAEMON
  on "$1" ps -aq |
    HULL_ROOT="$work/$1" xargs -r -n 8 -P 2 "$bin/hull" -H "unix://$work/$1.sock" rm -f >/dev/null
}

kib() { # FIELD FILE: a "Field: N kB" line's N
  awk -v f="$1:" '$1 == f { print $2 }' "$2"
}
mem_available_kib() { kib MemAvailable /proc/meminfo; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# CPU time of the running QEMUs of a daemon, in clock ticks.
qemu_ticks() { # DAEMON
  local pid total=0
  for pid in $(qemu_pids "$work/$1"); do
    # utime and stime, counted after the ")" that ends the command name.
    total=$((total + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')))
  done
  echo "$total"
}

# Prints "pss private" in KiB for one QEMU.
qemu_memory() { # PID
  awk '$1 == "Pss:" { pss = $2 }
       $1 == "Private_Clean:" || $1 == "Private_Dirty:" { private += $2 }
       END { print pss + 0, private + 0 }' "/proc/$1/smaps_rollup"
}

# Prints one QEMU's PSS by part, in KiB: "tcg qemu guest_private
# guest_shared files": TCG's translation cache (its one executable
# anonymous mapping), QEMU's other anonymous memory (heap, arenas, stacks,
# TCG's TLBs), the guest's RAM (the one mapping of MEMORY MiB) split into
# the pages it wrote itself and its share of pages others map too (a
# template's), and QEMU's binary and libraries.
qemu_parts() { # PID
  awk -v ram=$((memory * 1024)) '
    /^[0-9a-f]+-[0-9a-f]+ / {
      anonymous = NF < 6 || $6 ~ /^\[(heap|stack)/
      executable = $2 ~ /x/
      next
    }
    $1 == "Size:" {
      part = "files"
      if ($2 == ram) part = "guest"
      else if (anonymous) part = executable ? "tcg" : "qemu"
    }
    $1 == "Pss:" { pss[part] += $2 }
    $1 == "Private_Clean:" || $1 == "Private_Dirty:" { if (part == "guest") private += $2 }
    END { print pss["tcg"] + 0, pss["qemu"] + 0, private + 0, pss["guest"] - private, pss["files"] + 0 }
  ' "/proc/$1/smaps"
}

# (a) SAMPLES idle containers of one daemon: their QEMUs' PSS and private
# memory, and the guest's view of its memory.
measure_idle() { # DAEMON LABEL
  local name=$1 label=$2 ids=() id pss_sum=0 private_sum=0 count=0 pid
  local tcg qemu guest_private guest_shared files parts=(0 0 0 0 0)
  for _ in $(seq "$samples"); do
    ids+=("$(on "$name" run -d busybox sleep 100000)")
  done
  sleep "$settle"
  for pid in $(qemu_pids "$work/$name"); do
    read -r pss private < <(qemu_memory "$pid")
    pss_sum=$((pss_sum + pss))
    private_sum=$((private_sum + private))
    read -r tcg qemu guest_private guest_shared files < <(qemu_parts "$pid")
    parts=($((parts[0] + tcg)) $((parts[1] + qemu)) $((parts[2] + guest_private)) \
      $((parts[3] + guest_shared)) $((parts[4] + files)))
    count=$((count + 1))
  done
  on "$name" exec "${ids[0]}" cat /proc/meminfo >"$work/meminfo"
  printf '%-16s PSS %6s MiB   private %6s MiB   (mean of %d QEMUs)   guest: MemTotal %s MiB, MemAvailable %s MiB\n' \
    "$label" "$(mib $((pss_sum / count)))" "$(mib $((private_sum / count)))" "$count" \
    "$(mib "$(kib MemTotal "$work/meminfo")")" "$(mib "$(kib MemAvailable "$work/meminfo")")"
  printf '  %-14s by part: TCG translation cache %s, QEMU heap and stacks %s, guest RAM written %s + shared %s, binaries and libraries %s (MiB)\n' \
    "" "$(mib $((parts[0] / count)))" "$(mib $((parts[1] / count)))" "$(mib $((parts[2] / count)))" \
    "$(mib $((parts[3] / count)))" "$(mib $((parts[4] / count)))"
  on "$name" rm -f "${ids[@]}" >/dev/null
}

# (a') what free page reporting gives back: one container's QEMU before,
# while and after its guest fills and empties a third of its memory. Only
# cold boots report; a clone keeps what it touched (README, sizes).
measure_reclaim() { # DAEMON LABEL
  local name=$1 label=$2 id pid fill=$((memory / 3)) before during after
  id=$(on "$name" run -d busybox sleep 100000)
  sleep "$settle"
  pid=$(qemu_pids "$work/$name" | tail -n 1)
  read -r before _ < <(qemu_memory "$pid")
  on "$name" exec "$id" dd if=/dev/zero of=/dev/shm/fill bs=1M count="$fill" 2>/dev/null
  read -r during _ < <(qemu_memory "$pid")
  on "$name" exec "$id" rm /dev/shm/fill
  sleep "$settle"
  read -r after _ < <(qemu_memory "$pid")
  printf 'freed pages, %-15s PSS %s MiB idle, %s MiB holding %d MiB in tmpfs, %s MiB %d s after deleting it\n' \
    "$label" "$(mib "$before")" "$(mib "$during")" "$fill" "$(mib "$after")" "$settle"
  on "$name" rm -f "$id" >/dev/null
}

echo "accelerator: $accel; VM: $cpus vCPU, $memory MiB; TCG tb-size: ${HULL_TCG_TB_SIZE:-default (32)} MiB" >&2
start_daemon cold --no-templates
# Image templates off where plain clones are measured: busybox's starts
# would otherwise give it one. A third daemon clones busybox's own, its
# templates apart: daemons of other roots build templates of other keys.
start_daemon clones --image-template-memory 0
TEMPLATES="$templates-images" start_daemon images
until on clones info | grep -q "VM Template: ready"; do sleep 0.1; done
on images template create busybox >/dev/null

echo "(a) host memory per idle container, $samples at a time, measured ${settle} s after start"
measure_idle cold "cold boot"
measure_idle clones "template clone"
measure_idle images "image template clone"
measure_reclaim cold "cold boot"
measure_reclaim clones "template clone"
for i in 0 2; do
  kill "${daemon_pids[$i]}"
  wait "${daemon_pids[$i]}" 2>/dev/null || true
done
rm -f "$work/cold.sock" "$work/images.sock"

if [ "$n" -gt 0 ]; then
  echo "(b) density: up to $n idle template clones, stopping while host MemAvailable > $margin_mib MiB"
  sync
  before=$(mem_available_kib)
  started=0 stopped_by="N=$n reached"
  SECONDS=0
  while [ "$started" -lt "$n" ]; do
    if [ "$(mem_available_kib)" -lt $((margin_mib * 1024)) ]; then
      stopped_by="host MemAvailable fell under $margin_mib MiB"
      break
    fi
    if ! on clones run -d busybox sleep 100000 >/dev/null 2>>"$work/density.err"; then
      stopped_by="a start failed: $(tail -n 1 "$work/density.err")"
      break
    fi
    started=$((started + 1))
  done
  elapsed=$SECONDS
  sleep "$settle"
  after=$(mem_available_kib)
  pss_total=0
  for pid in $(qemu_pids "$work/clones"); do
    read -r pss _ < <(qemu_memory "$pid")
    pss_total=$((pss_total + pss))
  done
  used=$((before - after))
  printf '  %d running (%s) in %d s; host MemAvailable %s -> %s MiB\n' \
    "$started" "$stopped_by" "$elapsed" "$(mib "$before")" "$(mib "$after")"
  if [ "$started" -gt 0 ]; then
    printf '  host memory used: %s MiB in all, %s MiB per container; sum of QEMU PSS %s MiB, %s MiB per container\n' \
      "$(mib "$used")" "$(mib $((used / started)))" "$(mib "$pss_total")" "$(mib $((pss_total / started)))"
  fi
  # Over a window of its own, once the last clone's start is over.
  ticks=$(qemu_ticks clones)
  sleep "$idle_seconds"
  ticks=$(($(qemu_ticks clones) - ticks))
  printf '  idle CPU: %s%% of a core per container, over %d s; template memory on tmpfs: %s; host load average: %s\n' \
    "$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v s="$idle_seconds" -v n="$started" 'BEGIN { printf "%.2f", n ? t / hz / s / n * 100 : 0 }')" \
    "$idle_seconds" \
    "$(du -sh "$templates" | cut -f1)" "$(cut -d' ' -f1-3 /proc/loadavg)"
  remove_all clones
fi

if [ "$rate_seconds" -gt 0 ]; then
  echo "(c) creation rate: $parallel clients starting idle containers for $rate_seconds s"
  # Each client starts containers until the window closes or memory runs short.
  client() { # INDEX
    local count=0 end=$(($(date +%s) + rate_seconds))
    while [ "$(date +%s)" -lt "$end" ] && [ "$(mem_available_kib)" -ge $((margin_mib * 1024)) ]; do
      on clones run -d busybox sleep 100000 >/dev/null 2>>"$work/rate.err" || break
      count=$((count + 1))
    done
    echo "$count" >"$work/rate.$1"
  }
  begin=$(date +%s.%N)
  clients=()
  for i in $(seq "$parallel"); do
    client "$i" &
    clients+=($!)
  done
  wait "${clients[@]}"
  elapsed=$(awk -v b="$begin" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - b }')
  created=$(cat "$work"/rate.* | awk '{ s += $1 } END { print s }')
  printf '  %d containers in %s s: %s containers/s' "$created" "$elapsed" \
    "$(awk -v c="$created" -v s="$elapsed" 'BEGIN { printf "%.2f", c / s }')"
  [ -s "$work/rate.err" ] && printf '; last error: %s' "$(tail -n 1 "$work/rate.err")"
  echo
  echo "  hull info: $(on clones info | grep 'Recent VM Starts' | sed 's/^Recent VM Starts: //') of the last 20"
fi
