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
cargo clippy --workspace --exclude lb-xdp --exclude lb-tc --exclude lb-sock --exclude lb-perf-ebpf --all-targets --locked -- -D warnings

echo "[test] clippy (eBPF crates, bpfel-unknown-none)"
for crate in xdp tc sock perf-lab/ebpf; do
    (cd "$crate" && cargo +nightly clippy --locked --target bpfel-unknown-none -Z build-std=core -- -D warnings)
done

echo "[test] cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --exclude lb-xdp --exclude lb-tc --exclude lb-sock --exclude lb-perf-ebpf --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# cargo's last result line is a doc-test binary's; print the whole run's totals last.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
