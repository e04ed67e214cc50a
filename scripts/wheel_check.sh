#!/usr/bin/env bash
# `make wheel-check`: the wheel as users get it runs without the dev, bench or openai dependencies.
#  1. `python -m build` makes the sdist, then the wheel from the sdist, each in its own isolated environment that
#     holds only [build-system] requires (so the sdist must carry everything the wheel needs);
#  2. a fresh virtual environment gets the runtime lock (requirements/runtime.txt, hash-checked) and the wheel,
#     without dependencies; `pip check` proves the lock satisfies the wheel's metadata;
#  3. `stratus-db demo` runs in an empty temporary directory, on the embedded SQLite file it creates there;
#  4. `stratus-db serve`, the image's command (Dockerfile, whose runtime stage makes this same environment), answers
#     /health, /ready and an authenticated request, and stops cleanly on SIGTERM.
# Usage: scripts/wheel_check.sh [PYTHON with `build` installed, default .venv/bin/python]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
builder="${1:-$root/.venv/bin/python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
pip_quiet=(--quiet --disable-pip-version-check)

echo "wheel-check: building the sdist and the wheel in $work/dist"
"$builder" -m build --outdir "$work/dist" "$root" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
wheel=("$work"/dist/stratus_db-*.whl)
sdist=("$work"/dist/stratus_db-*.tar.gz)
echo "wheel-check: built $(basename "${sdist[0]}") and $(basename "${wheel[0]}")"

# What the package needs at run time is in the wheel: the migrations (their versions/ folder, without __init__.py,
# comes in as a namespace package), the typing marker, the message dictionary, the licence.
"$builder" - "${wheel[0]}" <<'PY'
import sys
import zipfile

names = set(zipfile.ZipFile(sys.argv[1]).namelist())
needed = [
    "stratus_db/py.typed",
    "stratus_db/migrations/env.py",
    "stratus_db/migrations/script.py.mako",
    "stratus_db/conversations/data/messages-v1.zdict",
    "stratus_db-0.1.0.dist-info/licenses/LICENSE",
]
missing = [name for name in needed if name not in names]
revisions = sorted(name for name in names if name.startswith("stratus_db/migrations/versions/") and name.endswith(".py"))
if missing or not revisions:
    sys.exit(f"wheel-check: missing from the wheel: {missing or 'the migration revisions'}")
print(f"wheel-check: the wheel holds {len(names)} files, {len(revisions)} migration revisions among them")
PY

PYTHON="${PYTHON:-python3}"
"$PYTHON" -m venv "$work/venv"
venv="$work/venv/bin"
"$venv/python" -m pip install "${pip_quiet[@]}" --require-hashes -r "$root/requirements/runtime.txt"
"$venv/python" -m pip install "${pip_quiet[@]}" --no-deps "${wheel[0]}"
"$venv/python" -m pip check --disable-pip-version-check
# Nothing of the extras came along.
"$venv/python" - <<'PY'
import importlib.util
import sys

extras = ["openai", "snowballstemmer", "pytest", "hypothesis", "mypy", "ruff", "langchain_postgres", "psycopg"]
present = [name for name in extras if importlib.util.find_spec(name) is not None]
if present:
    sys.exit(f"wheel-check: the runtime environment holds {present}")
PY
# Every module imports without them: the OpenAI SDK only where an OpenAI summarizer is made. (The migration
# scripts run inside alembic, not as imports.)
"$venv/python" - <<'PY'
import importlib
import pkgutil
import sys

import stratus_db

modules = [
    info.name
    for info in pkgutil.walk_packages(stratus_db.__path__, "stratus_db.")
    if not info.name.startswith("stratus_db.migrations.")
]
for name in modules:
    importlib.import_module(name)
print(f"wheel-check: all {len(modules) + 1} modules of stratus_db import without the extras")
PY
echo "wheel-check: $("$venv/python" -m pip list --disable-pip-version-check --format=freeze | wc -l) packages in the runtime environment, none of the extras"

mkdir "$work/empty"
cd "$work/empty"
env -u DATABASE_URL -u STRATUS_DATA_DIR "$venv/stratus-db" demo >"$work/demo.log" 2>&1 || { cat "$work/demo.log"; exit 1; }
tail -n 5 "$work/demo.log"
test -f stratus.db || { echo "wheel-check: the demo left no stratus.db in $work/empty" >&2; exit 1; }
echo "wheel-check: stratus-db demo ran from the wheel on $(basename "$PWD")/stratus.db"

# The image's command, from the same environment: serve, answer, stop on SIGTERM as Cloud Run stops an instance.
STRATUS_API_JWT_SECRET="$("$venv/stratus-db" generate-key --blind-index 2>/dev/null)"
export STRATUS_API_JWT_SECRET
port="$("$venv/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
env -u DATABASE_URL -u STRATUS_DATA_DIR PORT="$port" "$venv/stratus-db" serve --host 127.0.0.1 >"$work/serve.log" 2>&1 &
server=$!
token="$("$venv/stratus-db" create-token --kind admin --id wheel-check)"
"$venv/python" - "$port" "$token" <<'PY' || { kill "$server" 2>/dev/null; cat "$work/serve.log"; exit 1; }
import json
import sys
import time
import urllib.error
import urllib.request

base, token = f"http://127.0.0.1:{sys.argv[1]}", sys.argv[2]
for _ in range(100):
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=2) as answer:
            break
    except (urllib.error.URLError, ConnectionError):
        time.sleep(0.2)
else:
    sys.exit("wheel-check: stratus-db serve never answered /health")
with urllib.request.urlopen(f"{base}/ready", timeout=10) as answer:
    assert json.load(answer)["healthy"] is True
request = urllib.request.Request(
    f"{base}/v1/users",
    data=json.dumps({"name": "Ana Voo", "email": "ana@wheel-check.com.br", "role": "pilot"}).encode(),
    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
)
with urllib.request.urlopen(request, timeout=10) as answer:
    assert answer.status == 201, answer.status
print("wheel-check: stratus-db serve answered /health, /ready and POST /v1/users")
PY
kill -TERM "$server"
# uvicorn raises the signal again once it has shut down (exit status 143): the log says whether it shut down cleanly.
status=0
wait "$server" || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 143 ] || ! grep -q "service stopped: requests finished, database closed" "$work/serve.log"; then
    echo "wheel-check: stratus-db serve did not stop cleanly on SIGTERM (status $status)" >&2
    cat "$work/serve.log"
    exit 1
fi
echo "wheel-check: stratus-db serve stopped cleanly on SIGTERM"
