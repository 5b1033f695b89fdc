"""Trajectory fingerprint: a fixed pseudo-random sample of each traced layer's output, summed over tiles.

For a layer named ``L`` whose per-tile output has ``n`` elements and shape ``S``, sample position ``j``
(``0 <= j < k``) is ``int.from_bytes(SHA256(f"medcert/fp/1|{L}|{S}|{j}")[:8], "little") % n`` in the
C-order flattening of the tile output. The fingerprint of the layer is the float64 sum, over tiles in
tiling order (and over the samples of a batch, such as a model's candidate patches), of the sampled values.
Cost: one gather of ``k`` values per layer per tile (no second pass).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

METHOD = "medcert/fp/1"
DEFAULT_K = 256


def sample_positions(name: str, shape: tuple[int, ...], k: int) -> np.ndarray:
    """The ``k`` sample positions for a layer output of ``shape`` (see module docstring)."""
    n = int(np.prod(shape))
    tag = f"{METHOD}|{name}|{','.join(map(str, shape))}|"
    return np.array([int.from_bytes(hashlib.sha256(f"{tag}{j}".encode()).digest()[:8], "little") % n
                     for j in range(k)], dtype=np.int64)


@dataclass
class LayerTrace:
    """Accumulated samples of one layer."""

    name: str
    shape: tuple[int, ...]
    values: np.ndarray
    tiles: int = 0


@dataclass
class TrajectoryRecorder:
    """Registers forward hooks on ``model.trace_layers()`` and accumulates the fingerprint."""

    k: int = DEFAULT_K
    layers: dict[str, LayerTrace] = field(default_factory=dict)
    _handles: list[Any] = field(default_factory=list)
    _index: dict[tuple[str, tuple[int, ...]], torch.Tensor] = field(default_factory=dict)

    def attach(self, model: nn.Module) -> TrajectoryRecorder:
        for name, module in model.trace_layers():  # type: ignore[operator]
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            shape = tuple(int(s) for s in output.shape[1:])  # per-sample shape
            key = (name, shape)
            idx = self._index.get(key)
            if idx is None:
                idx = torch.from_numpy(sample_positions(name, shape, self.k)).to(output.device)
                self._index[key] = idx
            flat = output.detach().reshape(output.shape[0], -1).index_select(1, idx)
            vals = flat.to("cpu", torch.float64).sum(dim=0).numpy()
            trace = self.layers.get(name)
            if trace is None:
                trace = self.layers[name] = LayerTrace(name, shape, np.zeros(self.k, dtype=np.float64))
            elif trace.shape != shape:
                raise RuntimeError(f"layer {name} changed output shape between tiles")
            trace.values += vals
            trace.tiles += 1
        return hook


def deviation(replayed: np.ndarray, certified: np.ndarray) -> float:
    """max |replayed - certified| / max(RMS(certified), 1e-12): scale-free per-layer deviation."""
    certified = np.asarray(certified, dtype=np.float64)
    diff = np.max(np.abs(np.asarray(replayed, dtype=np.float64) - certified)) if certified.size else 0.0
    rms = float(np.sqrt(np.mean(certified * certified))) if certified.size else 0.0
    return float(diff / max(rms, 1e-12))
