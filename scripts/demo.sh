#!/usr/bin/env bash
# Runs the skiff walkthrough with the release binaries (built by `make demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
exec target/release/skiff-demo
