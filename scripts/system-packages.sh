#!/usr/bin/env bash
# Debian packages used by the tests: DICOM validators and offscreen rendering. Idempotent; skips when present.
set -euo pipefail
need=()
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
command -v dcmdump >/dev/null 2>&1 || need+=(dcmtk)
[ -e /usr/lib/x86_64-linux-gnu/libEGL_mesa.so.0 ] || need+=(libegl1 libegl-mesa0 libgl1-mesa-dri)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "[medcert] missing Debian packages (${need[*]}); install them as root to run every test" >&2
  exit 0
fi
echo "[medcert] installing Debian packages: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
