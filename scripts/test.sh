#!/usr/bin/env bash
# Whole test suite (lint + pytest) in the pinned environment. Test files run in parallel worker processes (one
# per CPU core, at most 4; a file's tests stay in one worker and share its fixtures); pass -n 0 to run serially.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
bash "$root/scripts/system-packages.sh"
cd "$root"
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -n auto --maxprocesses 4 --dist loadfile "$@"
