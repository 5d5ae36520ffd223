#!/usr/bin/env bash
# The project's test command: installs what it needs (idempotent), checks formatting and
# lints (userspace and eBPF crates in separate passes), then runs every test. The kernel
# and namespace tests need root; under CI they fail rather than skip without it.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "[test] rustfmt"
cargo fmt --all -- --check

echo "[test] clippy (userspace)"
cargo clippy --workspace --exclude lb-xdp --exclude lb-tc --exclude lb-perf-ebpf --all-targets --locked -- -D warnings

echo "[test] clippy (eBPF crates, bpfel-unknown-none)"
for crate in xdp tc; do
    (cd "$crate" && cargo +nightly clippy --locked --target bpfel-unknown-none -Z build-std=core -- -D warnings)
done

echo "[test] cargo test"
cargo test --workspace --exclude lb-xdp --exclude lb-tc --exclude lb-perf-ebpf --locked
