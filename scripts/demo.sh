#!/usr/bin/env bash
# Set up, then replay recorded MT-Bench and GSM8K traffic through tierwise on SQLite (replay.db).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/tierwise replay datasets/mt_bench.jsonl datasets/gsm8k.jsonl \
  --database-url "sqlite+aiosqlite:///./replay.db" --reset "$@"
