#!/usr/bin/env bash
# Create .venv (if missing) and install tierwise with its dev tools into it, at the versions
# pinned in constraints.txt (reproducible; TIERWISE_UNPINNED=1 resolves the newest allowed
# versions instead, as scripts/check-unpinned.sh does in a venv of its own). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if [ "${TIERWISE_UNPINNED:-0}" = "1" ]; then
  .venv/bin/python -m pip install --quiet -e '.[dev]'
else
  .venv/bin/python -m pip install --quiet -c constraints.txt -e '.[dev]'
fi
