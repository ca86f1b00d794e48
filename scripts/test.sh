#!/usr/bin/env bash
# Runs the whole test suite: lint, format check, unit tests and integration tests against a
# real SeaweedFS started by the tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
lint_dirs=(edgeproxy tests)
[ -d benchmarks ] && lint_dirs+=(benchmarks)
ruff check "${lint_dirs[@]}"
ruff format --check "${lint_dirs[@]}"
python -m pytest -q -p no:cacheprovider "$@"
