#!/usr/bin/env bash
# Main job end to end on the embedded default: demo study -> segment + certify -> verify.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
exec "$root/.venv/bin/medcert" demo --workdir "${MEDCERT_DEMO_DIR:-$root/.medcert-demo}" "$@"
