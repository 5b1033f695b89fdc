#!/usr/bin/env bash
# Rebuild the bundled demo model from scratch: train -> nodule operating point -> held-out evaluation ->
# model card. Writes into ${1:-build/demo-model}; copy the results into Resources/Models/ to ship them.
# 62 min of training on 2 CPU cores (both networks, bf16 autocast), then ~40 min of calibration and evaluation.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
py="$root/.venv/bin/python"
out="${1:-$root/build/demo-model}"
mkdir -p "$out"
"$root/.venv/bin/medcert" train-demo-model --out "$out/trained.safetensors" --seed 0 --minutes 62 --threads 2 \
    --overwrite
"$py" -m medcert.training.operating_point --weights "$out/trained.safetensors" \
    --out "$out/medcert-lung-demo.safetensors" --n 12 --min-sensitivity 0.9 --threads 2
"$py" -m medcert.training.evaluate --weights "$out/medcert-lung-demo.safetensors" --n 50 --seed-start 900000 \
    --threads 2 --json "$out/held-out.json" --update-weights-metrics
"$py" -m medcert.training.model_card --weights "$out/medcert-lung-demo.safetensors" --out "$out/MODEL_CARD.md"
