#!/usr/bin/env bash
# Set up, then run the test suite on SQLite and PostgreSQL (127.0.0.1:5432, database test;
# without a reachable server the Postgres half is skipped locally and fails under CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/pytest -q "$@"
