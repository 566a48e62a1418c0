"""Load loop for scripts/bench-func.sh: concurrent clients calling a
function synchronously, and the same clients running `runc run` of the same
command with the same stdin; prints latency percentiles and rates.

Two phases, one per hulld (two hullds in one network namespace would take
each other's bridge and nftables table): `pooled` prints the levels and
the sustained rate and keeps its warm median in --warm-file; `cold` prints
cold boots against that median."""

import argparse
import http.client
import json
import statistics
import sys
import subprocess
import threading
import time
import urllib.parse

BODY = b"hello from the function benchmark\n"


def call(url):
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request("POST", parts.path + "/sync", body=BODY)
        answer = conn.getresponse()
        body = answer.read()
    finally:
        conn.close()
    if answer.status != 200 or body != BODY:
        raise RuntimeError(f"call answered {answer.status}: {body[:200]!r}")


def runc(bundle, name):
    done = subprocess.run(["runc", "run", "-b", bundle, name], input=BODY,
                          capture_output=True, timeout=120)
    if done.returncode != 0 or done.stdout != BODY:
        raise RuntimeError(f"runc run exited {done.returncode}: {done.stderr[:200]!r}")


def load(work, clients, seconds, max_calls=None):
    """Runs `work(client, n)` from `clients` threads for `seconds` (or
    `max_calls` each): latencies, calls per second, errors."""
    latencies, errors = [], []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(index):
        n = 0
        while time.monotonic() < deadline and (max_calls is None or n < max_calls):
            start = time.monotonic()
            try:
                work(index, n)
            except Exception as error:  # counted and shown, the loop goes on
                with lock:
                    errors.append(str(error))
            else:
                with lock:
                    latencies.append(time.monotonic() - start)
            n += 1

    began = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, len(latencies) / (time.monotonic() - began), errors


def pct(latencies, q):
    if not latencies:
        return float("nan")
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def first(what, work):
    """Runs `work` once, or stops the benchmark with why: a benchmark whose
    every call fails would otherwise only show it after all its levels."""
    start = time.monotonic()
    try:
        work(0, 0)
    except Exception as error:
        sys.exit(f"the first {what} failed: {error}")
    log(f"the first {what} took {(time.monotonic() - start) * 1000:.0f}ms")


def log(line):
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=("pooled", "cold"))
    for flag in ("--url", "--warm-file"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--bundle")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--sustain", type=float, default=60)
    args = parser.parse_args()

    def hull(_client, _n):
        call(args.url)

    if args.phase == "cold":
        first("cold call", hull)
        with open(args.warm_file) as f:
            warm = json.load(f)
        cold, _, cold_errors = load(hull, 1, 600, max_calls=5)
        if not cold:
            sys.exit(f"every cold call failed: {cold_errors[:1]}")
        print(f"no pool, no template (cold boot per call), 1 client: p50 {pct(cold, .5):.0f}ms"
              f" against {warm:.0f}ms pooled:"
              f" {statistics.median(cold) * 1000 / warm:.1f}x, {len(cold_errors)} errors")
        return

    def reference(client, n):
        runc(args.bundle, f"hull-bench-func-{client}-{n}")

    first("call", hull)
    first("runc run", reference)
    # A few calls first, so each level starts from a pool at rest.
    load(hull, 1, 60, max_calls=3)
    print(f"{'clients':>7} {'call p50':>9} {'call p99':>9} {'runc p50':>9} {'runc p99':>9}"
          f" {'p50 ratio':>9} {'calls/s':>8} {'runc/s':>7} errors")
    for clients in (1, 4, 16):
        log(f"{clients} clients")
        calls, rate, errors = load(hull, clients, args.seconds)
        runs, runc_rate, runc_errors = load(reference, clients, args.seconds)
        ratio = statistics.median(calls) / statistics.median(runs) if calls and runs else float("nan")
        print(f"{clients:>7} {pct(calls, .5):>7.0f}ms {pct(calls, .99):>7.0f}ms"
              f" {pct(runs, .5):>7.0f}ms {pct(runs, .99):>7.0f}ms {ratio:>8.1f}x"
              f" {rate:>8.1f} {runc_rate:>7.1f} {len(errors)}/{len(runc_errors)}")
        for error in (errors + runc_errors)[:3]:
            print(f"        e.g. {error}")
        sys.stdout.flush()
    log(f"sustaining 4 clients for {args.sustain:.0f}s")
    calls, rate, errors = load(hull, 4, args.sustain)
    print(f"sustained, 4 clients, {args.sustain:.0f}s: {rate:.1f} calls/s,"
          f" p50 {pct(calls, .5):.0f}ms, p99 {pct(calls, .99):.0f}ms, {len(errors)} errors")

    warm, _, _ = load(hull, 1, 60, max_calls=5)
    with open(args.warm_file, "w") as f:
        json.dump(statistics.median(warm) * 1000, f)


if __name__ == "__main__":
    main()
