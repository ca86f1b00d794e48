#!/usr/bin/env bash
# Starts the local multi-tier topology of tiers/local.toml on loopback: SeaweedFS (S3 origin)
# with demo content, one shield, two regionals and two edges, each node its own process.
# Prints the URLs and a curl to try; Ctrl-C stops every process it started. Extra arguments
# go to `edgeproxy topology up` (e.g. --json).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
exec edgeproxy topology up tiers/local.toml "$@"
