#!/usr/bin/env bash
# Does tierwise still pass with the newest releases its pyproject.toml allows? Installs it with
# its dev extras into a fresh venv WITHOUT constraints.txt (pip resolves the newest versions),
# prints what differs from constraints.txt, and runs a quick subset of the tests (route API,
# decision writer, keys, metrics, logs, layering; SQLite and, when reachable, PostgreSQL).
# Not part of .ci/run's main path: run it before refreshing the pins (scripts/lock.sh), or on
# a schedule. Extra arguments go to pytest. Exit status is pytest's.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tierwise-unpinned.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
"$PYTHON" -m venv "$TMP/venv"
PIP=("$TMP/venv/bin/python" -m pip --disable-pip-version-check --quiet)
"${PIP[@]}" install --upgrade pip
"${PIP[@]}" install --upgrade --upgrade-strategy eager -e '.[dev]'
"$TMP/venv/bin/python" -m pip freeze --exclude-editable --disable-pip-version-check \
  | sort > "$TMP/unpinned.txt"
grep '==' constraints.txt | sort > "$TMP/pinned.txt"
echo "check-unpinned: versions that differ from constraints.txt (< pinned, > unpinned):"
diff "$TMP/pinned.txt" "$TMP/unpinned.txt" | grep '^[<>]' || echo "  none"
exec "$TMP/venv/bin/python" -m pytest -q -x -p no:cacheprovider \
  tests/test_route_api.py tests/test_decision_writer.py tests/test_keys.py \
  tests/test_metrics.py tests/test_logs.py tests/test_layering.py "$@"
