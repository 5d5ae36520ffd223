#!/usr/bin/env bash
# Installs everything the build, the tests and the demo need. Idempotent: every step
# checks first, so a second run costs a few seconds.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }

need_apt=()
for pkg in llvm-22-dev libpolly-22-dev iproute2 procps util-linux ethtool nftables iptables conntrack \
           libzstd-dev zlib1g-dev libelf-dev pkg-config bird2; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || need_apt+=("$pkg")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
    log "apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    log "installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
    log "adding rust-src to nightly"
    rustup component add rust-src --toolchain nightly
fi

for tc in stable nightly; do
    for comp in clippy rustfmt; do
        if ! rustup component list --toolchain "$tc" --installed | grep -q "^$comp"; then
            log "adding $comp to $tc"
            rustup component add "$comp" --toolchain "$tc"
        fi
    done
done

if ! command -v bpf-linker >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/bpf-linker" ]; then
    log "building bpf-linker 0.13.0 against LLVM 22 (2-3 minutes)"
    LLVM_PREFIX=/usr/lib/llvm-22 cargo +stable install bpf-linker@0.13.0 --locked \
        --no-default-features --features llvm-22
fi
log "toolchain ready"
