#!/usr/bin/env bash
# Build the wheel, install only it (its dependencies from PyPI) into a fresh venv, and from an
# empty folder: migrate a new SQLite database, apply the built-in default policy, start
# `tierwise serve` on a free loopback port, wait for /healthz and route one request. Proves the
# wheel carries what the service needs (migrations, policies, judge prompts) and reaches nothing
# through the repository or the working directory. Exits non-zero at the first failed step.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/tierwise-wheel.XXXXXX")"
VENV="$TMP/venv"
SERVER_PID=""
started=$SECONDS

step() { printf 'wheel-check: [%3d s] %s\n' "$((SECONDS - started))" "$*"; }

cleanup() {
  local status=$?
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ "$status" -ne 0 ]; then
    step "FAILED (exit $status)"
    if [ -s "$TMP/serve.log" ]; then
      echo "--- tierwise serve log ---" >&2
      cat "$TMP/serve.log" >&2
    fi
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# Build from a copy of the files git sees (tracked and new, not ignored): a stale build/ or
# egg-info in the working tree cannot leak into the wheel, and the tree is left as it was.
step "building the wheel"
mkdir "$TMP/src" "$TMP/dist" "$TMP/run"
git ls-files -z --cached --others --exclude-standard \
  | tar --null -T - --ignore-failed-read -cf - | tar -C "$TMP/src" -xf -
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --quiet)
"${PIP[@]}" wheel --no-deps --wheel-dir "$TMP/dist" "$TMP/src"
WHEEL="$(ls "$TMP"/dist/tierwise-*.whl)"

step "checking the contents of $(basename "$WHEEL")"
"$VENV/bin/python" - "$WHEEL" "$TMP/src" <<'EOF'
"""Every module of router/, evaluator/, tierwise/ and every migration script is in the wheel,
with the package data; nothing else is at its top level (no datasets/, no alembic/ shadowing
the alembic library)."""
import sys
import zipfile
from pathlib import Path

wheel, src = zipfile.ZipFile(sys.argv[1]), Path(sys.argv[2])
names = set(wheel.namelist())
expected = {
    "router/policies/default.toml",
    "router/policies/replay.toml",
    "evaluator/graders/judge_prompts.jsonl",
    "tierwise/_migrations/script.py.mako",
}
for package in ("router", "evaluator", "tierwise"):
    expected |= {p.relative_to(src).as_posix() for p in (src / package).rglob("*.py")}
expected |= {
    "tierwise/_migrations/" + p.relative_to(src / "alembic").as_posix()
    for p in (src / "alembic").rglob("*.py")
}
problems = [f"missing from the wheel: {n}" for n in sorted(expected - names)]
problems += [
    f"unexpected at the wheel's top level: {n}"
    for n in sorted(names)
    if n.split("/")[0] not in ("router", "evaluator", "tierwise")
    and not n.startswith("tierwise-")
]
if problems:
    sys.exit("\n".join(problems))
print(f"wheel-check: {len(names)} files, {sum(i.file_size for i in wheel.infolist())} bytes")
EOF

step "installing the wheel and its dependencies into a fresh venv"
"${PIP[@]}" install -c constraints.txt "$WHEEL"  # the pinned versions, as setup.sh

# From here on nothing may come from the repository or its settings.
cd "$TMP/run"
unset PYTHONPATH
while IFS= read -r name; do unset "$name"; done < <(compgen -e | grep '^TIERWISE_' || true)
DB="sqlite+aiosqlite:///$TMP/t.db"
TW="$VENV/bin/tierwise"

"$VENV/bin/python" - "$VENV" <<'EOF'
"""The installed packages are the wheel's, the migrations and judge prompts come with them."""
import sys
from pathlib import Path

import tierwise
from evaluator.datasets import load_judge_prompts
from tierwise import migrate

venv = Path(sys.argv[1]).resolve()
for path in (Path(tierwise.__file__), migrate.script_location()):
    if venv not in path.resolve().parents:
        sys.exit(f"wheel-check: {path} is not inside the fresh venv {venv}")
prompts = load_judge_prompts()
if len(prompts) != 8:
    sys.exit(f"wheel-check: expected 8 judge prompt templates, found {len(prompts)}")
EOF

step "tierwise db upgrade"
"$TW" db upgrade --database-url "$DB"
step "tierwise policy apply default"
"$TW" policy apply default --database-url "$DB"

PORT="$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
step "tierwise serve on 127.0.0.1:$PORT"
"$TW" serve --host 127.0.0.1 --port "$PORT" --database-url "$DB" >"$TMP/serve.log" 2>&1 &
SERVER_PID=$!

"$VENV/bin/python" - "$PORT" "$SERVER_PID" <<'EOF'
"""Wait (at most 60 s) for /healthz, then route one request: 200 with a model in it."""
import json
import os
import sys
import time
import urllib.error
import urllib.request

port, pid = int(sys.argv[1]), int(sys.argv[2])
base = f"http://127.0.0.1:{port}"


def call(path: str, body: object | None = None) -> tuple[int, dict[str, object]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path, data=data, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


deadline = time.monotonic() + 60
while True:
    try:
        status, health = call("/healthz")
        break
    except (urllib.error.URLError, ConnectionError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit("wheel-check: tierwise serve exited before answering /healthz")
        if time.monotonic() > deadline:
            sys.exit("wheel-check: no answer from /healthz within 60 s")
        time.sleep(0.2)
if status != 200 or health.get("status") != "ok" or health.get("table_version") is None:
    sys.exit(f"wheel-check: /healthz answered {status} {health}")
status, decision = call("/v1/route", {"task_type": "classify", "input_tokens": 120})
if status != 200 or not decision.get("model"):
    sys.exit(f"wheel-check: POST /v1/route answered {status} {decision}")
print(f"wheel-check: /healthz {health}; routed to {decision['model']} ({decision['tier']})")
status, models = call("/v1/models")
ids = [m["id"] for m in models.get("data", [])]  # type: ignore[union-attr]
if status != 200 or "tierwise/classify" not in ids:
    sys.exit(f"wheel-check: GET /v1/models answered {status} {models}")
# No provider key is configured here: the gateway must say which setting to set.
body = {"model": "tierwise/classify", "messages": [{"role": "user", "content": "hi"}]}
status, error = call("/v1/chat/completions", body)
message = str(error.get("error", {}).get("message"))  # type: ignore[union-attr]
if status != 502 or "TIERWISE_OPENAI_API_KEY" not in message:
    sys.exit(f"wheel-check: POST /v1/chat/completions answered {status} {error}")
print(f"wheel-check: the gateway lists {len(ids)} models and, with no provider key, says {message}")
EOF

# Started outside the repository with the replay reference provider, the service must say
# that it found no held-out set, and where it looked.
grep -q "TIERWISE_DATASETS_DIR" "$TMP/serve.log" || {
  echo "wheel-check: serve did not report the missing held-out sets" >&2
  exit 1
}

step "stopping the server"
kill "$SERVER_PID"
# uvicorn re-raises the SIGTERM it handled after a graceful shutdown: 143 is a clean stop.
code=0
wait "$SERVER_PID" || code=$?
SERVER_PID=""
if [ "$code" -ne 0 ] && [ "$code" -ne 143 ]; then
  echo "wheel-check: tierwise serve exited with $code on SIGTERM" >&2
  exit 1
fi
grep -q "Application shutdown complete" "$TMP/serve.log" || {
  echo "wheel-check: tierwise serve did not shut down cleanly" >&2
  exit 1
}
step "passed in $((SECONDS - started)) s"
