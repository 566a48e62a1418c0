#!/usr/bin/env bash
# Runs Hull's whole test suite: formatting, lints, unit tests and end-to-end
# tests that boot real VMs (under TCG where KVM cannot run the guest kernel).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The fuzz targets are a workspace of their own (scripts/fuzz.sh runs them):
# lint them without libFuzzer, on the workspace's versions and build.
[ -f fuzz/Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock
CARGO_TARGET_DIR=target cargo clippy --manifest-path fuzz/Cargo.toml \
    --no-default-features --bins -- -D warnings
# The end-to-end tests drive the built binaries; cargo test alone builds only
# the binaries of the package under test.
cargo build --workspace --locked
scripts/build-agent.sh >/dev/null
kernel_dir=$(guest/kernel/build.sh)
export HULL_KERNEL="$kernel_dir/vmlinux"
# Every suite runs even after a failure, so one run shows them all.
cargo test --workspace --locked --no-fail-fast
