#!/usr/bin/env bash
# Benchmark: a service's balancers against a replica reached straight, in
# one run. Boots one hulld (as the e2e tests do, in a network namespace
# of its own) with two services of three busybox httpd replicas: `plain`
# (TCP round robin, nftables DNAT) and `web` (HTTP leastconn through
# hulld's proxy). BENCH_CLIENTS threads on the host send connection-per-
# request `GET /`s for BENCH_SECONDS to each target (and one thread
# alone, for what a hop adds to a request); then one replica of
# each service is killed and the time until it leaves the balancer is
# taken (health checks every 500 ms, fall=2). Prints the figures and the
# ratios service/direct; asserts nothing.
#
#   scripts/bench-service.sh
#     BENCH_CLIENTS=8 BENCH_SECONDS=5
#     BENCH_PROFILE=release  builds hulld optimized (the default is the
#       tests' debug build: the proxy's figures are then a floor);
#     BENCH_WRAP="cmd args"  runs the test under cmd (a namespace runner).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=()
[ "${BENCH_PROFILE:-}" = release ] && profile=(--release)
export HULL_KERNEL="${HULL_KERNEL:-$(ls -d ~/.cache/hull/kernel/*/ | head -1)vmlinux}"
export BENCH_CLIENTS="${BENCH_CLIENTS:-8}" BENCH_SECONDS="${BENCH_SECONDS:-5}"
cargo build -q "${profile[@]}" --workspace
scripts/build-agent.sh >/dev/null
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# shellcheck disable=SC2086
${BENCH_WRAP:-} cargo test -q "${profile[@]}" -p hull --test services_http -- \
  --ignored --exact bench --nocapture 2>/dev/null | tee "$out" | grep '^BENCH' || {
  echo "the benchmark failed:" >&2
  cat "$out" >&2
  exit 1
}
awk '
  /^BENCH c[0-9]+ / {
    c = substr($2, 2); key = c " " $3
    split($4, r, "="); split($5, m, "="); split($6, p, "=")
    rps[key] = r[2]; p50[key] = m[2]; p99[key] = p[2]
    if (!(c in seen)) { seen[c] = 1; order[++n] = c }
  }
  /_removal ms=/ { split($3, r, "="); ms[$2] = r[2] }
  END {
    for (i = 1; i <= n; i++) {
      c = order[i]
      printf "\n%d client(s), a connection per request:\n", c
      split("tcp http", kinds, " ")
      for (j = 1; j <= 2; j++) {
        d = c " " kinds[j] "_direct"; v = c " " kinds[j] "_service"
        printf "  %-4s direct %6.0f req/s p50 %6.2f p99 %6.2f ms | service %6.0f req/s p50 %6.2f p99 %6.2f ms | service/direct: req/s %.2f p50 %.2f p99 %.2f\n",
          kinds[j], rps[d], p50[d] / 1000, p99[d] / 1000, rps[v], p50[v] / 1000, p99[v] / 1000,
          rps[v] / rps[d], p50[v] / p50[d], p99[v] / p99[d]
      }
    }
    printf "\na killed replica out of the balancer: nftables (tcp) %d ms, proxy (http) %d ms\n", ms["plain_removal"], ms["web_removal"]
  }' "$out"
