"""Tolerance profiles: how far an honest replay on another machine may deviate. See docs/replay-tolerance.md."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from medcert.canonical import finite
from medcert.errors import CertificateError


@dataclass(frozen=True)
class ToleranceProfile:
    """Per-check thresholds; travels in the certificate (id in the signed core, values in the evidence)."""

    id: str
    layer_rel: float  # trajectory: max|Δ| / RMS per layer
    logits_rel: float  # final logits fingerprint, same metric
    prob_abs: float  # anomaly/explanation map values at fingerprint positions
    margin: float  # top-2 logit margin below which a voxel may legitimately change label
    expl_abs: float  # explanation map (scaled to [0, 1]) at fingerprint positions

    def to_json(self) -> dict[str, Any]:
        return {k: (finite(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, obj: Any) -> ToleranceProfile:
        if not isinstance(obj, dict) or set(obj) != {"id", "layer_rel", "logits_rel", "prob_abs", "margin", "expl_abs"}:
            raise CertificateError("evidence.tolerance: expected id, layer_rel, logits_rel, prob_abs, margin, expl_abs")
        vals = {}
        for k in ("layer_rel", "logits_rel", "prob_abs", "margin", "expl_abs"):
            v = obj[k]
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < float(v) < 1:
                raise CertificateError(f"evidence.tolerance.{k}: must be a number in (0, 1)")
            vals[k] = float(v)
        if not isinstance(obj["id"], str):
            raise CertificateError("evidence.tolerance.id: must be a string")
        return cls(id=obj["id"], **vals)


# Calibrated on CPU kernel-path and thread-count variants; see docs/replay-tolerance.md for the figures.
# /1 (placeholder-model calibration) stays verifiable; /2 widens only expl_abs after the trained demo model's
# input-gradient map moved by 2.7e-3 under SSE4.1 / 1 thread (activations moved by < 1e-6).
FP32_CPU_V1 = ToleranceProfile(id="medcert.fp32/1", layer_rel=1e-4, logits_rel=1e-4, prob_abs=1e-4, margin=2e-3,
                               expl_abs=1e-3)
FP32_CPU = replace(FP32_CPU_V1, id="medcert.fp32/2", expl_abs=2e-2)
PROFILES = {p.id: p for p in (FP32_CPU_V1, FP32_CPU)}
DEFAULT_PROFILE = FP32_CPU
