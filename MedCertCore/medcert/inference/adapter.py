"""Model adapters: what MedCert needs to run a network reproducibly.

A researcher certifies their own network by registering its architecture (``medcert.models``) and writing the
adapter fields into the safetensors metadata key ``medcert.adapter``::

    {"spacing_mm": 2.0, "window": [-1000, 500], "midline_channel": true, "patch": [96, 96, 96],
     "overlap": 0.25, "labels": {"1": "right lung", "2": "left lung", "3": "lung nodule"}, "anomaly_label": 3}

Anything that satisfies :class:`ModelAdapter` can be passed to :func:`medcert.inference.run_segmentation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from torch import nn

from medcert.errors import WeightsError
from medcert.inference.preprocess import Preprocessed, PreprocessSpec, preprocess_volume
from medcert.volume import Volume
from medcert.weights import ModelWeights, build_network


class ModelAdapter(Protocol):
    """Preprocessing, network and output conventions of one certified model."""

    spec: PreprocessSpec
    patch: tuple[int, int, int]
    overlap: float
    labels: dict[int, str]
    anomaly_label: int | None

    def preprocess(self, volume: Volume) -> Preprocessed: ...

    def network(self) -> nn.Module: ...


@dataclass
class WeightsAdapter:
    """The adapter described by a weights file's ``medcert.adapter`` metadata."""

    weights: ModelWeights
    spec: PreprocessSpec
    patch: tuple[int, int, int]
    overlap: float
    labels: dict[int, str]
    anomaly_label: int | None

    @classmethod
    def from_weights(cls, weights: ModelWeights) -> WeightsAdapter:
        a: dict[str, Any] = weights.adapter
        try:
            spec = PreprocessSpec.from_json(a)
            patch = tuple(int(p) for p in a["patch"])
            overlap = float(a.get("overlap", 0.25))
            labels = {int(k): str(v) for k, v in a["labels"].items()}
            anomaly = a.get("anomaly_label")
            anomaly = None if anomaly is None else int(anomaly)
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"{weights.path}: invalid medcert.adapter metadata ({exc})") from exc
        if len(patch) != 3 or any(not 8 <= p <= 512 for p in patch) or not 0.0 <= overlap < 0.9:
            raise WeightsError(f"{weights.path}: adapter patch/overlap out of range")
        if not labels or any(not 1 <= k <= 255 for k in labels) or (anomaly is not None and anomaly not in labels):
            raise WeightsError(f"{weights.path}: adapter labels must be 1..255 and include the anomaly label")
        return cls(weights, spec, patch, overlap, labels, anomaly)  # type: ignore[arg-type]

    def preprocess(self, volume: Volume) -> Preprocessed:
        return preprocess_volume(volume, self.spec)

    def network(self) -> nn.Module:
        return build_network(self.weights)
