#!/usr/bin/env bash
# Runs the whole test suite: lint, format check, unit tests and integration tests against a
# real SeaweedFS started by the tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ruff check edgeproxy tests benchmarks
ruff format --check edgeproxy tests benchmarks
python -m pytest -q -p no:cacheprovider "$@"
