#!/usr/bin/env bash
# The Kubernetes walkthrough: brings the cluster up (scripts/cluster.sh), runs the seed's demos
# with kubectl against it (skiff-cluster-demo, built by `make release`), and takes it down.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/cluster.sh up
trap 'scripts/cluster.sh down' EXIT
target/release/skiff-cluster-demo "$@"
