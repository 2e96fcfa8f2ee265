#!/usr/bin/env bash
# Regenerate constraints.txt: install tierwise with its dev extras unpinned into a fresh venv
# and freeze what pip resolved (Python 3.11 on Linux x86_64, as CI runs). Run after changing
# dependencies in pyproject.toml, then run the tests and commit constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tierwise-lock.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
"$PYTHON" -m venv "$TMP/venv"
"$TMP/venv/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
{
  echo "# Pinned versions of every package tierwise and its dev extras install (Python 3.11, Linux x86_64),"
  echo "# as resolved when tested: scripts/setup.sh installs with -c constraints.txt (CI: .ci/run)."
  echo "# Regenerate after changing dependencies: scripts/lock.sh. Check that the unpinned resolution"
  echo "# still passes: scripts/check-unpinned.sh."
  "$TMP/venv/bin/python" -m pip freeze --exclude-editable --disable-pip-version-check
} > constraints.txt
echo "constraints.txt: $(grep -c '==' constraints.txt) pins"
