#!/usr/bin/env bash
# Benchmark: the default (QEMU user-mode) network's throughput for a
# container's own connections through the host, in one run. Prints
# figures, asserts nothing.
#
# hulld runs in a network namespace of its own (its nftables tables are
# the namespace's), linked by a veth pair to an "outside" namespace (the
# host's own addresses are closed to containers). A small server outside
# times NET_MIB sent to the guest (guest download: from its accept until
# the guest's nc closes after the last byte) and NET_MIB sent by the guest
# (upload: from accept until the last byte is read). Both connections
# leave the VM through QEMU's own sockets, the traffic that Hull's
# firewall rules by QEMU's uid.
#
#   scripts/bench-net.sh
#     NET_MIB=64
#     HULL_BIN_DIR=dir uses the hull and hulld found there instead of building;
#     HULL_AGENT and HULL_KERNEL, that agent and kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
net_mib="${NET_MIB:-64}"

if [ "$(id -u)" != 0 ]; then
  echo "bench-net.sh makes a network namespace: run it as root" >&2
  exit 1
fi
scripts/deps.sh
if [ -n "${HULL_BIN_DIR:-}" ]; then
  bin=$HULL_BIN_DIR
else
  cargo build --release --locked -q -p hull -p hulld
  bin=target/release
fi
agent="${HULL_AGENT:-$(scripts/build-agent.sh --release)}"
kernel="${HULL_KERNEL:-$(guest/kernel/build.sh)/vmlinux}"

work=$(mktemp -d /tmp/hull-net.XXXXXX)
templates="/dev/shm/hull-net-$$"
netns="hull-bench-net-$$"
outside="hull-bench-out-$$"
address=192.0.2.2
daemon_pid=""
server_pid=""
cleanup() {
  set +e
  [ -S "$work/hull.sock" ] && on ps -aq | xargs -r "$bin/hull" -H "unix://$work/hull.sock" rm -f >/dev/null
  [ -n "$server_pid" ] && kill "$server_pid"
  [ -n "$daemon_pid" ] && kill "$daemon_pid" && wait "$daemon_pid"
  for pid in $(cat "$work"/root/vms/*/qemu.pid 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  ip netns del "$netns"
  ip netns del "$outside"
  rm -rf "$work" "$templates"
}
trap cleanup EXIT

accel=tcg
if [ -w /dev/kvm ] && [ ! -e /sys/module/kvm_pvm ]; then accel=kvm; fi

ip netns add "$netns"
ip netns add "$outside"
ip -n "$netns" link set lo up
ip -n "$outside" link set lo up
ip -n "$netns" link add out0 type veth peer name out0 netns "$outside"
ip -n "$netns" addr add 192.0.2.1/24 dev out0
ip -n "$outside" addr add "$address/24" dev out0
ip -n "$netns" link set out0 up
ip -n "$outside" link set out0 up

scripts/busybox-image.sh "$work/busybox.tar" >/dev/null
on() { "$bin/hull" -H "unix://$work/hull.sock" "$@"; }
# `ip netns exec` mounts a /sys without the cgroup hierarchy: QEMU is
# confined without a cgroup, as the tests' daemons in namespaces are.
HULL_JAIL=mountns ip netns exec "$netns" "$bin/hulld" --root "$work/root" --host "unix://$work/hull.sock" \
  --kernel "$kernel" --agent "$agent" --accel "$accel" \
  --template-dir "$templates" 2>"$work/hulld.log" &
daemon_pid=$!
while [ ! -S "$work/hull.sock" ]; do sleep 0.05; done
on load -q -i "$work/busybox.tar" >/dev/null

cat >"$work/server.py" <<'PY'
import socket, sys, time
address, size = sys.argv[1], int(sys.argv[2]) << 20
listeners = []
for _ in range(2):
    s = socket.socket()
    s.bind((address, 0))
    s.listen(1)
    listeners.append(s)
print(listeners[0].getsockname()[1], listeners[1].getsockname()[1], flush=True)
chunk = b"\0" * (1 << 16)
conn, _ = listeners[0].accept()
start = time.monotonic()
sent = 0
while sent < size:
    sent += conn.send(chunk[: size - sent])
conn.shutdown(socket.SHUT_WR)
while conn.recv(1 << 16):
    pass
down = time.monotonic() - start
conn.close()
conn, _ = listeners[1].accept()
start = time.monotonic()
got = 0
while got < size:
    data = conn.recv(1 << 16)
    if not data:
        break
    got += len(data)
up = time.monotonic() - start
conn.close()
print(f"{size / down / 2**20:.1f} {got / up / 2**20:.1f}", flush=True)
PY
ip netns exec "$outside" python3 "$work/server.py" "$address" "$net_mib" >"$work/server.out" &
server_pid=$!
until [ -s "$work/server.out" ]; do sleep 0.05; done
read -r down_port up_port <"$work/server.out"

echo "accelerator: $accel; $net_mib MiB each way; one run" >&2
on run --rm busybox sh -c \
  "nc $address $down_port </dev/null >/dev/null; head -c $((net_mib << 20)) /dev/zero | nc $address $up_port" >/dev/null
wait "$server_pid"
server_pid=""
read -r down up < <(tail -1 "$work/server.out")

echo
printf '%-34s %18s %18s\n' "default network ($net_mib MiB)" "to the VM MiB/s" "from the VM MiB/s"
printf '%-34s %18s %18s\n' "VM's own connections out" "$down" "$up"
echo "(the VM connects out through QEMU's user-mode network to a server beyond the host)"
