#!/usr/bin/env bash
# Runs Hull's whole test suite: formatting, lints, unit tests and end-to-end
# tests that boot real VMs (under TCG where KVM cannot run the guest kernel).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
scripts/build-agent.sh >/dev/null
kernel_dir=$(guest/kernel/build.sh)
export HULL_KERNEL="$kernel_dir/vmlinux"
cargo test --workspace --locked
