#!/usr/bin/env bash
# Runs every fuzz target of fuzz/fuzz_targets for a while each (60 seconds
# unless told): scripts/fuzz.sh [seconds] [target...]. A crash is kept in
# fuzz/artifacts/<target>/ and makes the script fail; each one found becomes a
# regression test next to the code it broke. Corpora grow in fuzz/corpus/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true

# libFuzzer's coverage instrumentation needs only stable rustc flags (what
# cargo-fuzz passes); the address sanitizer is a nightly flag, which
# RUSTC_BOOTSTRAP opens on this stable toolchain. FUZZ_SANITIZER=none goes without.
export RUSTC_BOOTSTRAP=1
flags="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks \
-Cforce-frame-pointers"
if [ "${FUZZ_SANITIZER:-address}" = address ]; then
    flags="$flags -Zsanitizer=address"
fi
host=$(rustc -vV | sed -n 's/^host: //p')
# The same versions as the workspace, so that a check shares its build.
[ -f fuzz/Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock
# --target keeps build scripts and proc-macros uninstrumented.
RUSTFLAGS="$flags" cargo build --release --manifest-path fuzz/Cargo.toml \
    --target "$host" --target-dir fuzz/target --bins

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for file in fuzz/fuzz_targets/*.rs; do
        targets+=("$(basename "$file" .rs)")
    done
fi
failed=()
for target in "${targets[@]}"; do
    binary=fuzz/target/$host/release/$target
    if [ ! -x "$binary" ]; then
        echo "fuzz target '$target' was not built: add a [[bin]] named $target to fuzz/Cargo.toml" >&2
        failed+=("$target")
        continue
    fi
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    echo "fuzzing $target for ${seconds}s" >&2
    # Every target must stay within a few hundred MiB, whatever its input.
    if ! "$binary" -max_total_time="$seconds" -rss_limit_mb=2048 \
        -malloc_limit_mb="${FUZZ_MALLOC_LIMIT_MB:-512}" -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$target/" "fuzz/corpus/$target"; then
        failed+=("$target")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz targets that failed: ${failed[*]} (see fuzz/artifacts/)" >&2
    exit 1
fi
