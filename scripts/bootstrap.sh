#!/usr/bin/env bash
# Create or reuse .venv with the pinned environment; idempotent. Source it or run it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
lock="$root/scripts/requirements.lock"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3

want="$(cat "$lock" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
stamp="$venv/.medcert-env"
if [ ! -x "$venv/bin/python" ]; then
  echo "[medcert] creating $venv" >&2
  "$py" -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[medcert] installing pinned dependencies (first run takes a few minutes)" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$lock" 2>&1 | { grep -v "is ignored: it is neither" || true; } >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$root"
  echo "$want" > "$stamp"
fi
