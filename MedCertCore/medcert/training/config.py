"""The demo model's fixed design: architecture, adapter (preprocessing + tiling) and seed ranges."""

from __future__ import annotations

from typing import Any

# Stage 1 (docs/demo-model.md): two networks, a lung network on full-width tiles and a batch-normalised nodule
# network (normalised with statistics learnt in training, not per tile), trained by ``medcert train-demo-model``.
STAGE1_ARCHITECTURE = "medcert.lungnodule/1"
STAGE1_CONFIG: dict[str, Any] = {"lung": {"in_channels": 2, "channels": [8, 16, 32, 64, 128]},
                                 "nodule": {"in_channels": 1, "channels": [16, 32, 64, 128], "norm": "batch"}}
# The shipped model adds a candidate classifier (``medcert.training.classifier``): candidates are the local
# maxima (7^3 windows, at most 512) of the stage-1 nodule margin raised by 2.5 logits; each is scored on a 16^3
# patch (32 mm) of windowed intensity + stage-1 margin.
CLASSIFIER: dict[str, Any] = {"in_channels": 2, "channels": [32, 64], "patch": 16, "hidden": 64}
CANDIDATES: dict[str, Any] = {"offset": 2.5, "nms": 7, "limit": 512}
ARCHITECTURE = "medcert.lungnodule/2"
MODEL_CONFIG: dict[str, Any] = {**STAGE1_CONFIG, "classifier": CLASSIFIER, "candidates": CANDIDATES}
# Full-width tiles in x (512 mm at 2 mm): every tile sees both lungs and the mediastinum. The lung network's
# instance normalisation removes absolute intensity and midline offsets, so left/right must come from
# context inside the tile (see docs/demo-model.md).
PATCH = (256, 64, 32)
# Stage-1 training cubes of the nodule network (96 mm). Its receptive field is 92 voxels, wider than these
# cubes and than the inference tiles in y and z, so stage 2 trains on 96 x 64 x 32 patches: what the network
# sees around a voxel then matches the inference tiles (scripts/build-demo-model.sh).
NODULE_PATCH = (48, 48, 48)
DENSE_HU = -600.0  # lung voxels above this (not nodule) are the nodule network's hard negatives
ADAPTER: dict[str, Any] = {
    "spacing_mm": 2.0, "window": [-1000.0, 500.0], "midline_channel": True, "patch": list(PATCH),
    "overlap": 0.25, "labels": {"1": "right lung", "2": "left lung", "3": "lung nodule"}, "anomaly_label": 3,
}
MODEL_NAME = "medcert-lung-demo"
MODEL_VERSION = "3.1.0"
INTENDED_USE = ("Demonstration of certified, replay-verifiable inference on synthetic chest CT phantoms. "
                "Not a medical device; not for clinical use; never validated on patient data.")

# Phantom seeds, three disjoint ranges. Training run ``--seed S`` (0..69) uses 100000 + 10000*S + i
# (i < 10000 cases, so at most 799999); the nodule operating point is chosen on calibration seeds
# 800000..899999; evaluation uses held-out seeds from 900000 upward.
TRAIN_SEED_BASE = 100_000
TRAIN_SEED_STRIDE = 10_000
MAX_RUN_SEED = 69
CALIBRATION_SEED_START = 800_000
HELD_OUT_SEED_START = 900_000


def training_phantom_seed(run_seed: int, index: int) -> int:
    if not 0 <= index < TRAIN_SEED_STRIDE or not 0 <= run_seed <= MAX_RUN_SEED:
        raise ValueError(f"training phantom index must be < 10000 and run seed in 0..{MAX_RUN_SEED}")
    return TRAIN_SEED_BASE + TRAIN_SEED_STRIDE * run_seed + index
