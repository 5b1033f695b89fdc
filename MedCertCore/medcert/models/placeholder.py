"""Deterministic, UNTRAINED placeholder weights: used only when the bundled demo model is absent.

The network is initialised from a fixed seed, so every machine builds the same file bit for bit. Its
output is meaningless; it exists so the certify → verify pipeline can run before a trained model ships.
"""

from __future__ import annotations

from pathlib import Path

import torch

from medcert.models.registry import build_model
from medcert.weights import save_weights

PLACEHOLDER_NAME = "medcert-untrained-placeholder"
CONFIG = {"in_channels": 2, "n_classes": 4, "channels": [8, 16, 32, 64]}
ADAPTER = {"spacing_mm": 2.0, "window": [-1000.0, 500.0], "midline_channel": True, "patch": [96, 96, 96],
           "overlap": 0.25, "labels": {"1": "right lung", "2": "left lung", "3": "lung nodule"},
           "anomaly_label": 3}


def write_placeholder_weights(path: str | Path, seed: int = 20261121) -> Path:
    """Write the seeded, untrained U-Net to ``path`` (overwrites: the content is a pure function of the seed)."""
    torch.manual_seed(seed)
    model = build_model("medcert.unet3d/1", CONFIG)
    return save_weights(path, model.state_dict(), {
        "architecture": "medcert.unet3d/1", "config": CONFIG, "adapter": ADAPTER,
        "name": PLACEHOLDER_NAME, "version": f"seed-{seed}",
        "intended_use": "UNTRAINED placeholder for pipeline testing only; outputs are meaningless",
        "training_data": "none", "metrics": {}}, overwrite=True)
