#!/usr/bin/env bash
# Runs the demo: builds a throwaway lab in network namespaces (client, LB node, three
# backends), starts the daemon with its built-in config, drives TCP and UDP flows at the VIP,
# prints a report and removes the lab. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --locked --release -p lb-daemon -p lb-lab
exec ./target/release/ferrolb-lab demo "$@"
