#!/usr/bin/env bash
# The cost of the cloud's front door: requests per second of
# `GET /containers/json` through the tenant listener (TLS, each request
# signed with HYPER-HMAC-SHA256 and verified) against hulld's Unix socket
# without either, in the same run, one connection per request as the CLI
# makes them. Prints figures only.
#
#   scripts/bench-api.sh            REQUESTS=2000, CONCURRENCY=4 by default
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${REQUESTS:-2000}"
concurrency="${CONCURRENCY:-4}"

scripts/deps.sh
cargo build --release --locked -q -p hulld -p hull
cargo build --release --locked -q -p hull-api --example bench_api

work=$(mktemp -d /tmp/hull-bench-api.XXXXXX)
hulld_pid=
cleanup() {
  [ -n "$hulld_pid" ] && kill "$hulld_pid" 2>/dev/null || true
  sleep 0.5
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export HULL_HOST="unix://$work/hull.sock" HULL_ROOT="$work/root"
HULL_LOG=warn target/release/hulld --listen "tcp://127.0.0.1:$port" \
  --secrets-key "$work/secrets.key" >"$work/hulld.log" 2>&1 &
hulld_pid=$!
until [ -S "$work/hull.sock" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.1; done
target/release/hull admin tenant create bench >/dev/null
key=$(target/release/hull admin key create bench --format json)
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])" <<<"$key"; }
target/release/examples/bench_api "$work/hull.sock" "127.0.0.1:$port" "$work/root/tls/ca.pem" \
  "$(field AccessKey)" "$(field SecretKey)" "$requests" "$concurrency"
