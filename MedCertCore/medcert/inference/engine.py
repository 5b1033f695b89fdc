"""Certified forward pass: deterministic settings, sliding window with blending, fingerprint hooks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from medcert.inference.fingerprint import TrajectoryRecorder
from medcert.inference.tiling import gaussian_weights, pad_to_patch, tiles
from medcert.progress import ProgressFn, silent


@contextlib.contextmanager
def certified_mode(device: str = "cpu", *, grad: bool = False) -> Iterator[None]:
    """Deterministic algorithms, no TF32, autograd only when asked; restores the previous settings afterwards."""
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    prev_bench = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True, warn_only=False)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    try:
        with torch.enable_grad() if grad else torch.inference_mode():
            yield
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev_tf32
        torch.backends.cudnn.benchmark = prev_bench


def refine_logits(model: nn.Module, tensor: np.ndarray, logits: np.ndarray, *,
                  recorder: TrajectoryRecorder | None = None, device: str = "cpu") -> tuple[np.ndarray, dict | None]:
    """A model's whole-grid second stage (``model.refine(input, logits)``), fingerprinted like the tiles;
    models without one return ``logits`` unchanged and no candidates."""
    refine = getattr(model, "refine", None)
    if not callable(refine):
        return logits, None
    if recorder is not None:
        recorder.attach(model)
    try:
        with certified_mode(device):
            out, found = refine(torch.from_numpy(tensor).to(device), torch.from_numpy(logits).to(device))
    finally:
        if recorder is not None:
            recorder.detach()
    return np.ascontiguousarray(out.to("cpu", torch.float32).numpy()), found


def sliding_window_logits(model: nn.Module, tensor: np.ndarray, patch: tuple[int, int, int], overlap: float,
                          *, recorder: TrajectoryRecorder | None = None, device: str = "cpu",
                          progress: ProgressFn = silent) -> np.ndarray:
    """Logits ``[n_classes, X, Y, Z]`` (float32) of ``tensor`` ``[C, X, Y, Z]``, one tile per forward pass."""
    padded, shape = pad_to_patch(tensor, patch)
    grid = padded.shape[1:]
    weight = torch.from_numpy(gaussian_weights(patch))
    acc: torch.Tensor | None = None
    norm = torch.zeros(grid, dtype=torch.float32)
    tile_list = list(tiles(grid, patch, overlap))
    src = torch.from_numpy(np.ascontiguousarray(padded))
    if recorder is not None:
        recorder.attach(model)
    try:
        with certified_mode(device):
            for n, sl in enumerate(tile_list):
                x = src[(slice(None), *sl)].unsqueeze(0).to(device)
                out = model(x)[0].to("cpu", torch.float32)
                if acc is None:
                    acc = torch.zeros((out.shape[0], *grid), dtype=torch.float32)
                acc[(slice(None), *sl)] += out * weight
                norm[sl] += weight
                progress("inference", (n + 1) / len(tile_list))
    finally:
        if recorder is not None:
            recorder.detach()
    assert acc is not None
    logits = (acc / norm).numpy()
    return np.ascontiguousarray(logits[:, : shape[0], : shape[1], : shape[2]])
