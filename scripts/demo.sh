#!/usr/bin/env bash
# Starts SeaweedFS with a demo bucket (audio, images, JSON) and an edgeproxy node in front of
# it on http://127.0.0.1:8080/ . Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
exec edgeproxy demo "$@"
