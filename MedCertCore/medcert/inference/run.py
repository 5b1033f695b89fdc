"""One segmentation run, identical for the issuer and the replaying verifier."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from medcert.digests import array_digest
from medcert.inference.adapter import ModelAdapter
from medcert.inference.engine import refine_logits, sliding_window_logits
from medcert.inference.explain import explanation_map
from medcert.inference.fingerprint import LayerTrace, TrajectoryRecorder, sample_positions
from medcert.inference.postprocess import GridOutputs, to_input_grid
from medcert.inference.preprocess import Preprocessed
from medcert.progress import ProgressFn, silent
from medcert.tolerance import ToleranceProfile
from medcert.volume import Volume

MODEL_INPUT_DOMAIN = "medcert/model-input/1"
LOGITS_K = 2048


@dataclass
class SegmentationRun:
    """Everything a certificate binds, or a verifier compares, about one run."""

    prep: Preprocessed
    model_input_digest: str
    trajectory: list[LayerTrace]
    logits_samples: np.ndarray  # float64 [LOGITS_K] at sample_positions("logits", logits.shape, LOGITS_K)
    logits_shape: tuple[int, ...]
    outputs: GridOutputs
    candidates: dict | None = None  # a two-stage model's candidates: grid voxels, stage-1 margins, scores
    timings: dict[str, float] = field(default_factory=dict)


def model_input_digest(prep: Preprocessed) -> str:
    """Exact digest of the float32 tensor fed to the network, bound to its grid geometry."""
    from medcert.digests import geometry_list

    return array_digest(prep.tensor, domain=MODEL_INPUT_DOMAIN,
                        header={"grid_to_ras": geometry_list(prep.grid_to_ras)})


def run_segmentation(volume: Volume, adapter: ModelAdapter, tolerance: ToleranceProfile, *,
                     device: str = "cpu", threads: int | None = None, fingerprint: bool = True,
                     explain: bool = True, model: nn.Module | None = None,
                     progress: ProgressFn = silent) -> SegmentationRun:
    """Preprocess, certified forward pass with trajectory hooks, postprocess onto the input grid."""
    if threads:
        torch.set_num_threads(int(threads))
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    progress("preprocessing", 0.0)
    prep = adapter.preprocess(volume)
    digest = model_input_digest(prep)
    t["preprocess_s"] = time.perf_counter() - t0
    progress("loading model", 0.0)
    model = (model if model is not None else adapter.network()).to(device).requires_grad_(False)
    recorder = TrajectoryRecorder() if fingerprint else None
    t1 = time.perf_counter()
    logits = sliding_window_logits(model, prep.tensor, adapter.patch, adapter.overlap, recorder=recorder,
                                   device=device, progress=progress)
    logits, candidates = refine_logits(model, prep.tensor, logits, recorder=recorder, device=device)
    t["forward_s"] = time.perf_counter() - t1
    expl = None
    if explain and adapter.anomaly_label is not None:
        t3 = time.perf_counter()
        expl, t["explained_tiles"] = explanation_map(model, prep.tensor, logits, adapter.patch, adapter.overlap,
                                                     adapter.anomaly_label, device=device, candidates=candidates,
                                                     progress=progress)
        t["explain_s"] = time.perf_counter() - t3
    pos = sample_positions("logits", logits.shape, LOGITS_K)
    samples = logits.reshape(-1)[pos].astype(np.float64)
    progress("postprocessing", 0.0)
    t2 = time.perf_counter()
    outputs = to_input_grid(logits, prep.grid_to_ras, volume, anomaly_label=adapter.anomaly_label,
                            margin_tol=tolerance.margin, explanation=expl)
    t["postprocess_s"] = time.perf_counter() - t2
    traces = list(recorder.layers.values()) if recorder else []
    return SegmentationRun(prep=prep, model_input_digest=digest, trajectory=traces, logits_samples=samples,
                           logits_shape=tuple(logits.shape), outputs=outputs, candidates=candidates,
                           timings=t)
