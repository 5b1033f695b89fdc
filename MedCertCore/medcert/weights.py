"""Model weights: safetensors only. The digest is SHA-256 of the file bytes; the model is loaded from the very
bytes that were hashed, so the file cannot change between hashing and loading. Pickle checkpoints are refused."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from medcert.atomic import atomic_write_bytes
from medcert.digests import b64u
from medcert.errors import WeightsError
from medcert.fileio import read_limited

PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".tar"}
MAX_WEIGHTS_BYTES = 4 * 1024**3
META_PREFIX = "medcert."
REQUIRED_META = ("architecture", "config", "adapter", "name", "version")
DEFAULT_WEIGHTS_NAME = "medcert-lung-demo.safetensors"


@dataclass(frozen=True)
class ModelWeights:
    """A verified-by-hash weights file and its model identity (from the safetensors header metadata)."""

    path: Path
    digest: str  # unpadded base64url SHA-256 of the file bytes
    size: int
    architecture: str
    config: dict[str, Any]
    adapter: dict[str, Any]
    name: str
    version: str
    intended_use: str = ""
    training_data: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    @property
    def digest_hex(self) -> str:
        import base64

        return base64.urlsafe_b64decode(self.digest + "=").hex()

    def metadata(self, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``medcert.*`` header metadata of this file (for ``save_weights``), optionally with new metrics."""
        return {"architecture": self.architecture, "config": self.config, "adapter": self.adapter, "name": self.name,
                "version": self.version, "intended_use": self.intended_use, "training_data": self.training_data,
                "metrics": self.metrics if metrics is None else metrics}

    def identity(self) -> dict[str, Any]:
        """Model identity as recorded in a certificate's evidence."""
        return {"name": self.name, "version": self.version, "architecture": self.architecture,
                "config": self.config, "intended_use": self.intended_use,
                "training_data": self.training_data, "metrics": self.metrics, "weights_bytes": self.size}


def _refuse_pickle(path: Path, head: bytes) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES or head[:2] == b"\x80\x02" or head[:4] == b"PK\x03\x04":
        raise WeightsError(
            f"{path} is a pickle/PyTorch checkpoint, which MedCert never loads (it can run code). Convert it once, "
            "in a trusted environment: `from safetensors.torch import save_file; "
            "save_file(torch.load(p, weights_only=True), 'model.safetensors', metadata={...})`")


def read_weights_bytes(path: str | Path) -> bytes:
    """Read a weights file after refusing pickle formats and oversize files."""
    path = Path(path)
    _refuse_pickle(path, b"")
    data = read_limited(path, MAX_WEIGHTS_BYTES, what="weights file", error=WeightsError)
    _refuse_pickle(path, data[:16])
    return data


def weights_digest(path: str | Path) -> str:
    """SHA-256 of the weights file bytes (unpadded base64url), without loading tensors."""
    return b64u(hashlib.sha256(read_weights_bytes(path)).digest())


def _header_metadata(data: bytes, path: Path) -> dict[str, str]:
    if len(data) < 10:
        raise WeightsError(f"{path} is not a safetensors file (too short)")
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or 8 + n > len(data) or data[8:9] != b"{":
        raise WeightsError(f"{path} is not a safetensors file")
    try:
        header = json.loads(data[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path} has a corrupt safetensors header") from exc
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise WeightsError(f"{path}: safetensors metadata must map strings to strings")
    return meta


def _json_field(meta: dict[str, str], key: str, path: Path) -> dict[str, Any]:
    try:
        value = json.loads(meta[META_PREFIX + key])
    except (KeyError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: metadata '{META_PREFIX}{key}' is missing or not JSON") from exc
    if not isinstance(value, dict):
        raise WeightsError(f"{path}: metadata '{META_PREFIX}{key}' must be a JSON object")
    return value


def load_weights(path: str | Path) -> ModelWeights:
    """Hash and parse a safetensors file; tensors are loaded from the hashed bytes."""
    path = Path(path)
    data = read_weights_bytes(path)
    meta = _header_metadata(data, path)
    missing = [k for k in REQUIRED_META if META_PREFIX + k not in meta]
    if missing:
        raise WeightsError(f"{path}: safetensors metadata lacks {', '.join(META_PREFIX + k for k in missing)}")
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path}: cannot read tensors: {exc}") from exc
    metrics = _json_field(meta, "metrics", path) if META_PREFIX + "metrics" in meta else {}
    name, version = meta[META_PREFIX + "name"], meta[META_PREFIX + "version"]
    for label, value in (("name", name), ("version", version)):
        if not 1 <= len(value) <= 64 or not value.isprintable():
            raise WeightsError(f"{path}: metadata '{META_PREFIX}{label}' must be 1..64 printable characters")
    return ModelWeights(
        path=path, digest=b64u(hashlib.sha256(data).digest()), size=len(data),
        architecture=meta[META_PREFIX + "architecture"], config=_json_field(meta, "config", path),
        adapter=_json_field(meta, "adapter", path), name=name, version=version,
        intended_use=meta.get(META_PREFIX + "intended_use", ""),
        training_data=meta.get(META_PREFIX + "training_data", ""), metrics=metrics, state_dict=tensors)


def build_network(weights: ModelWeights) -> nn.Module:
    """Rebuild the registered architecture and load the tensors strictly; eval mode."""
    from medcert.models import build_model

    model = build_model(weights.architecture, weights.config)
    try:
        model.load_state_dict(weights.state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise WeightsError(f"{weights.path}: tensors do not fit architecture {weights.architecture}: {first}") from exc
    return model.eval()


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any],
                 *, overwrite: bool = False) -> Path:
    """Write safetensors with ``medcert.*`` metadata (dicts/lists are stored as JSON strings); atomic."""
    meta = {(k if k.startswith(META_PREFIX) else META_PREFIX + k):
            (v if isinstance(v, str) else json.dumps(v, sort_keys=True)) for k, v in metadata.items()}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    return atomic_write_bytes(path, st_save(tensors, metadata=meta), overwrite=overwrite)


def default_weights_path() -> Path | None:
    """The bundled demo model: $MEDCERT_DEFAULT_WEIGHTS, else Resources/Models/ of this checkout or extension."""
    env = os.environ.get("MEDCERT_DEFAULT_WEIGHTS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for base in (here.parent.parent / "Resources" / "Models", here / "Resources" / "Models",
                 here.parent / "Resources" / "Models"):
        candidate = base / DEFAULT_WEIGHTS_NAME
        if candidate.is_file():
            return candidate
    return None
