#!/usr/bin/env bash
# Set up, then run the test suite on SQLite and PostgreSQL (127.0.0.1:5432, database test;
# without a reachable server the Postgres half is skipped locally and fails under CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The semantic cache's PostgreSQL tables need pgvector in the local server: built from the
# vendored source beside the repository when it is missing and we may install (root).
if [ "$(id -u)" = 0 ] && [ -x ../shared/tools/install-pgvector.sh ]; then
  ../shared/tools/install-pgvector.sh >/dev/null
fi
exec .venv/bin/pytest -q "$@"
