#!/usr/bin/env bash
# Benchmark: storage and network throughput of a container's VM against the
# host, in one run. Prints figures, asserts nothing.
#
# (a) Storage. One small static program (scripts/bench-io/iobench.rs, built
#     here with rustc) runs the same load on the host, on a block volume in a
#     VM (ext4 on a sparse disk file, virtio-scsi), on a dir volume (the
#     default, a host directory shared over the VM's virtio-9p share) and on
#     a host directory bound into a VM (virtio-9p too): sequential 1 MiB writes of SIZE_MIB then
#     fsync, sequential reads of it, RANDOM_OPS random 4 KiB writes then
#     fsync, RANDOM_OPS random 4 KiB reads. Before each read pass the file's
#     pages are dropped from the page cache of the kernel that runs the load
#     (posix_fadvise), not from the host's: a VM's reads of its volume may
#     still come from the host's cache of the disk file, as they do in use.
#     The host's figures are for a file beside the volumes' disk files, on
#     the same filesystem.
# (b) Network over a published port, on QEMU's user-mode network (the
#     default) and, where hulld can make bridges (root, nft), on a
#     user-defined bridge network (a tap, nftables DNAT): host -> VM, NET_MIB sent from the host to busybox `nc -l` in
#     the VM, timed until the receiver answers the count of bytes it read;
#     VM -> host, curl on the host fetching a NET_MIB file from busybox
#     httpd in the VM. The same nc and httpd on the host's loopback are the
#     reference.
# Each figure is the median of RUNS runs; every VM run boots its own VM.
#
#   scripts/bench-io.sh
#     SIZE_MIB=128 RANDOM_OPS=2000 NET_MIB=64 RUNS=3
#     STORAGE_ONLY=1 skips the network figures.
#     HULL_BIN_DIR=dir uses the hull and hulld found there instead of building.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib="${SIZE_MIB:-128}"
random_ops="${RANDOM_OPS:-2000}"
net_mib="${NET_MIB:-64}"
runs="${RUNS:-3}"

scripts/deps.sh
if [ -n "${HULL_BIN_DIR:-}" ]; then
  bin=$HULL_BIN_DIR
else
  cargo build --release --locked -q -p hull -p hulld
  bin=target/release
fi
agent=$(scripts/build-agent.sh --release)
kernel="$(guest/kernel/build.sh)/vmlinux"

work=$(mktemp -d /tmp/hull-io.XXXXXX)
templates="/dev/shm/hull-io-$$"
daemon_pid=""
host_httpd=""
cleanup() {
  set +e
  [ -S "$work/hull.sock" ] && on ps -aq | xargs -r "$bin/hull" -H "unix://$work/hull.sock" rm -f >/dev/null
  [ -S "$work/hull.sock" ] && on network rm hull-io-bench >/dev/null 2>&1
  [ -n "$host_httpd" ] && kill "$host_httpd"
  [ -n "$daemon_pid" ] && kill "$daemon_pid" && wait "$daemon_pid"
  for pid in $(cat "$work"/root/vms/*/qemu.pid 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  rm -rf "$work" "$templates"
}
trap cleanup EXIT

accel=tcg
if [ -w /dev/kvm ] && [ ! -e /sys/module/kvm_pvm ]; then accel=kvm; fi

mkdir -p "$work/tools" "$work/bind" "$work/host" "$work/www"
rustc --edition 2021 -O -C target-feature=+crt-static \
  scripts/bench-io/iobench.rs -o "$work/tools/iobench"
scripts/busybox-image.sh "$work/busybox.tar" >/dev/null

on() { HULL_ROOT="$work/root" "$bin/hull" -H "unix://$work/hull.sock" "$@"; }
"$bin/hulld" --root "$work/root" --host "unix://$work/hull.sock" \
  --kernel "$kernel" --agent "$agent" --accel "$accel" \
  --template-dir "$templates" 2>"$work/hulld.log" &
daemon_pid=$!
while [ ! -S "$work/hull.sock" ]; do sleep 0.05; done
on load -q -i "$work/busybox.tar" >/dev/null
on volume create -o type=block -o size=$((size_mib * 4))m benchvol >/dev/null
on volume create -o type=dir benchdir >/dev/null

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

declare -A figures
record() { # TARGET: reads iobench's "name value unit" lines
  local name value unit
  while read -r name value unit; do
    figures["$1 $name"]+="$value "
  done
}
result() { # TARGET NAME
  tr ' ' '\n' <<<"${figures["$1 $2"]:-}" | grep . | median
}

echo "accelerator: $accel; file: $size_mib MiB, $random_ops random 4 KiB operations; median of $runs runs" >&2
for run in $(seq "$runs"); do
  echo "storage run $run/$runs" >&2
  # (record runs in this shell, so no pipe into it)
  record host < <("$work/tools/iobench" "$work/host/f" "$size_mib" "$random_ops")
  record volume < <(on run --rm -v benchvol:/vol -v "$work/tools:/tools:ro" busybox \
    /tools/iobench /vol/f "$size_mib" "$random_ops")
  record dirvol < <(on run --rm -v benchdir:/vol -v "$work/tools:/tools:ro" busybox \
    /tools/iobench /vol/f "$size_mib" "$random_ops")
  record 9p < <(on run --rm -v "$work/bind:/bind" -v "$work/tools:/tools:ro" busybox \
    /tools/iobench /bind/f "$size_mib" "$random_ops")
done

echo
printf '%-26s %14s %14s %14s %14s\n' "storage" "seq write" "seq read" "rand write" "rand read"
printf '%-26s %14s %14s %14s %14s\n' "" "MiB/s" "MiB/s" "4k IOPS" "4k IOPS"
for target in host volume dirvol 9p; do
  case $target in
    host) label="host (same filesystem)" ;;
    volume) label="VM: block volume (ext4)" ;;
    dirvol) label="VM: dir volume (9p)" ;;
    9p) label="VM: host dir over 9p" ;;
  esac
  row=()
  for name in seq-write seq-read rand-write rand-read; do
    value=$(result "$target" "$name")
    if [ "$target" = host ]; then
      row+=("$value")
    else
      ratio=$(awk -v v="$value" -v h="$(result host "$name")" 'BEGIN { printf "%.2f", v / h }')
      row+=("$value (${ratio}x)")
    fi
  done
  printf '%-26s %14s %14s %14s %14s\n' "$label" "${row[@]}"
done

[ -n "${STORAGE_ONLY:-}" ] && exit 0

# --- network ---------------------------------------------------------------
# The receiver: counts what it read until the sender closed its side and
# answers the count, so the sender's clock stops once every byte arrived.
printf '#!/bin/sh\nwc -c\n' >"$work/tools/count"
chmod 755 "$work/tools/count"
head -c $((net_mib << 20)) /dev/urandom >"$work/payload"
cp "$work/payload" "$work/www/blob"

# The VM serves from its own disk, not from the 9p share it copies from.
setup="mkdir -p /www && cp /tools/count /count && \
head -c $((net_mib << 20)) /dev/urandom >/www/blob && \
{ while true; do nc -l -p 81 -e /count; done & } && exec httpd -f -p 80 -h /www"
networks=(default)
if [ "$(id -u)" -eq 0 ] && command -v nft >/dev/null; then
  on network create hull-io-bench >/dev/null
  networks+=(hull-io-bench)
fi
declare -A vm_http vm_sink
for network in "${networks[@]}"; do
  id=$(on run -d --network "$network" -p 127.0.0.1::80 -p 127.0.0.1::81 \
    -v "$work/tools:/tools:ro" busybox sh -c "$setup")
  vm_http[$network]=$(on port "$id" 80 | head -1 | sed 's/.*://')
  vm_sink[$network]=$(on port "$id" 81 | head -1 | sed 's/.*://')
done
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
host_http=$(free_port)
busybox httpd -f -p "127.0.0.1:$host_http" -h "$work/www" &
host_httpd=$!

# Sends the payload to PORT and prints MiB/s, from connecting to the
# receiver's count (checked: QEMU accepts a forwarded connection before the
# guest does, so a receiver not listening yet shows as a short count).
send() { # PORT
  python3 - "$1" "$work/payload" <<'EOF'
import socket, sys, time
port, data = int(sys.argv[1]), open(sys.argv[2], "rb").read()
for attempt in range(600):
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
    except OSError:
        answer = b""
    elapsed = time.monotonic() - start
    if answer.strip() == str(len(data)).encode():
        print(f"{len(data) / elapsed / 1048576:.1f}")
        sys.exit(0)
    time.sleep(0.1)
sys.exit("error: the receiver on port %d never counted the whole payload" % port)
EOF
}
upload_host() {
  local port
  port=$(free_port)
  busybox nc -l -p "$port" -e "$work/tools/count" &
  send "$port"
  wait $!
}
download() { # PORT: MiB/s of fetching the file with curl
  local pass
  for pass in $(seq 600); do
    curl -sf -o /dev/null -w '%{speed_download}\n' "http://127.0.0.1:$1/blob" && return 0
    sleep 0.1
  done
  echo "error: nothing serves on port $1" >&2
  exit 1
} >"$work/speed"
mib_of_speed() { awk '{ printf "%.1f\n", $1 / 1048576 }' "$work/speed"; }

for run in $(seq "$runs"); do
  echo "network run $run/$runs" >&2
  for network in "${networks[@]}"; do
    figures["vm upload $network"]+="$(send "${vm_sink[$network]}") "
    download "${vm_http[$network]}"
    figures["vm download $network"]+="$(mib_of_speed) "
  done
  figures["host upload"]+="$(upload_host) "
  download "$host_http"
  figures["host download"]+="$(mib_of_speed) "
done

ratio() { awk -v v="$1" -v h="$2" 'BEGIN { printf "%.2f", v / h }'; }
echo
printf '%-28s %22s %22s\n' "network ($net_mib MiB)" "host -> server MiB/s" "server -> host MiB/s"
printf '%-28s %22s %22s\n' "host loopback (busybox)" "$(result host upload)" "$(result host download)"
for network in "${networks[@]}"; do
  up=$(result vm "upload $network")
  down=$(result vm "download $network")
  label="VM, user-mode network"
  [ "$network" = default ] || label="VM, bridge network"
  printf '%-28s %22s %22s\n' "$label" \
    "$up ($(ratio "$up" "$(result host upload)")x)" "$down ($(ratio "$down" "$(result host download)")x)"
done
echo "(host -> server: bytes sent to nc -l until it counted them all; server -> host: curl of a file from busybox httpd)"
