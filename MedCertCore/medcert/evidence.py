"""The certificate's evidence: everything a verifier needs beyond the signed core, bound by digests.

Section digests (``d.pre``, ``d.trj``, ``d.lgt``, ``d.anm``) are SHA-256 of the RFC 8785 bytes of that
section; ``d.evd`` covers the whole evidence object.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import Any

import numpy as np

from medcert.canonical import canonical_bytes, decode_array, encode_array
from medcert.digests import b64u_sha256, geometry_list, grid_digest
from medcert.errors import CertificateError
from medcert.inference.explain import METHOD as EXPLANATION_METHOD
from medcert.inference.fingerprint import DEFAULT_K, METHOD, sample_positions
from medcert.inference.run import LOGITS_K, SegmentationRun
from medcert.volume import Volume

MASK_DOMAIN = "medcert/mask/1"
ANOMALY_UNIFORM = 1024
ANOMALY_TOP = 1024
MAX_LOW_MARGIN = 8_000_000


def section_digest(section: Any) -> str:
    """Digest of one evidence section."""
    return b64u_sha256(canonical_bytes(section))


def mask_digest(labels: np.ndarray, ijk_to_ras: np.ndarray) -> str:
    """Exact digest of a labelmap on its grid (uint8, Fortran order of [i, j, k])."""
    return grid_digest(np.asarray(labels, dtype=np.uint8), ijk_to_ras, domain=MASK_DOMAIN)


def _zb64(raw: bytes) -> str:
    return base64.b64encode(zlib.compress(raw, 6)).decode("ascii")


def _unzb64(text: Any, expected: int, field: str) -> bytes:
    if not isinstance(text, str):
        raise CertificateError(f"{field}: expected a base64 string")
    try:
        d = zlib.decompressobj()
        raw = d.decompress(base64.b64decode(text, validate=True), expected + 1)
    except (binascii.Error, zlib.error, ValueError) as exc:
        raise CertificateError(f"{field}: not valid compressed base64") from exc
    if len(raw) != expected or d.unconsumed_tail:
        raise CertificateError(f"{field}: holds {len(raw)} bytes, expected {expected}")
    return raw


def encode_low_margin(indices: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Sorted flat voxel indices (delta-coded uint32) and their certified labels, zlib + base64."""
    idx = np.asarray(indices, dtype=np.int64)
    deltas = np.diff(idx, prepend=0).astype("<u4")
    lab = np.asarray(labels, dtype=np.uint8).reshape(-1, order="F")[idx] if idx.size else np.zeros(0, np.uint8)
    return {"count": int(idx.size), "indices": _zb64(deltas.tobytes()), "labels": _zb64(lab.tobytes())}


def decode_low_margin(obj: Any, n_voxels: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated inverse of :func:`encode_low_margin`."""
    if not isinstance(obj, dict) or set(obj) != {"count", "indices", "labels"}:
        raise CertificateError("evidence.outputs.mask.low_margin: expected count, indices, labels")
    n = obj["count"]
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= min(n_voxels, MAX_LOW_MARGIN):
        raise CertificateError("evidence.outputs.mask.low_margin.count: out of range")
    deltas = np.frombuffer(_unzb64(obj["indices"], 4 * n, "low_margin.indices"), dtype="<u4")
    idx = np.cumsum(deltas.astype(np.int64))
    if n and (idx[-1] >= n_voxels or (n > 1 and np.any(deltas[1:] == 0))):
        raise CertificateError("evidence.outputs.mask.low_margin.indices: outside the volume or repeated")
    labels = np.frombuffer(_unzb64(obj["labels"], n, "low_margin.labels"), dtype=np.uint8).copy()
    return idx, labels


def map_fingerprint(values: np.ndarray, name: str) -> dict[str, Any]:
    """Issuer's fingerprint of a map on the input grid: values at fixed pseudo-random positions plus at the
    highest-valued voxels (positions recorded, Fortran order of [i, j, k])."""
    flat = values.reshape(-1, order="F")
    uni = sample_positions(name, values.shape, ANOMALY_UNIFORM)
    top = np.argpartition(flat, -ANOMALY_TOP)[-ANOMALY_TOP:] if flat.size > ANOMALY_TOP else np.arange(flat.size)
    pos = np.unique(np.concatenate([uni, top.astype(np.int64)]))
    return {"positions": encode_array(pos.astype("<i8")), "values": encode_array(flat[pos].astype("<f4"))}


def build_evidence(volume: Volume, run: SegmentationRun, *, spec_json: dict[str, Any], model: dict[str, Any],
                   labels_map: dict[int, str], tolerance: dict[str, Any], environment: dict[str, Any],
                   operator: dict[str, Any], findings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Assemble the evidence object of a certificate from one run."""
    ident = volume.identity
    out = run.outputs
    counts = np.bincount(out.labels.reshape(-1), minlength=256)
    evidence: dict[str, Any] = {
        "input": {
            "identity": {
                "source_format": ident.source_format, "modality": ident.modality,
                "acquisition_datetime": ident.acquisition_datetime, "device": ident.device,
                "source_system": ident.source_system, "patient_pseudonym": ident.patient_pseudonym,
                "frame_of_reference_uid": ident.frame_of_reference_uid,
                "n_instances": len(ident.instance_uids),
            },
            "source": {"dtype": np.asarray(volume.voxels).dtype.str, "shape": list(volume.shape),
                       "ijk_to_ras": geometry_list(volume.ijk_to_ras)},
            "model_input": {"dtype": "<f4", "shape": list(run.prep.tensor.shape),
                            "grid_to_ras": geometry_list(run.prep.grid_to_ras)},
        },
        "preprocessing": {"spec": spec_json, "steps": run.prep.steps},
        "model": model,
        "trajectory": {
            "method": METHOD, "k": DEFAULT_K,
            "layers": [{"name": t.name, "shape": list(t.shape), "tiles": t.tiles, "values": encode_array(t.values)}
                       for t in run.trajectory],
        },
        "outputs": {
            "mask": {"shape": list(volume.shape), "labels": {str(k): v for k, v in sorted(labels_map.items())},
                     "voxel_counts": {str(k): int(counts[k]) for k in sorted(labels_map)},
                     "low_margin": encode_low_margin(out.low_margin, out.labels)},
            "logits": {"method": METHOD, "k": LOGITS_K, "shape": list(run.logits_shape),
                       "values": encode_array(run.logits_samples)},
        },
        "tolerance": tolerance,
        "environment": environment,
        "operator": operator,
    }
    if out.anomaly is not None:
        evidence["outputs"]["anomaly"] = map_fingerprint(out.anomaly, "anomaly")
    if out.explanation is not None:
        evidence["outputs"]["explanation"] = {"method": EXPLANATION_METHOD,
                                              **map_fingerprint(out.explanation, "explanation")}
    if findings is not None:
        evidence["findings"] = findings
    return evidence


def decode_trajectory(section: Any) -> list[tuple[str, tuple[int, ...], int, np.ndarray]]:
    """Validated (name, shape, tiles, values) per layer."""
    if not isinstance(section, dict) or section.get("method") != METHOD or section.get("k") != DEFAULT_K:
        raise CertificateError(f"evidence.trajectory: unknown method (expected {METHOD}, k={DEFAULT_K})")
    layers = section.get("layers")
    if not isinstance(layers, list) or not 1 <= len(layers) <= 64:
        raise CertificateError("evidence.trajectory.layers: expected 1..64 layers")
    result = []
    for n, layer in enumerate(layers):
        f = f"evidence.trajectory.layers[{n}]"
        if not isinstance(layer, dict) or set(layer) != {"name", "shape", "tiles", "values"}:
            raise CertificateError(f"{f}: expected name, shape, tiles, values")
        name, shape, tiles = layer["name"], layer["shape"], layer["tiles"]
        if not isinstance(name, str) or not 0 < len(name) <= 128:
            raise CertificateError(f"{f}.name: invalid")
        if not isinstance(shape, list) or not all(isinstance(s, int) and s > 0 for s in shape):
            raise CertificateError(f"{f}.shape: invalid")
        if isinstance(tiles, bool) or not isinstance(tiles, int) or tiles < 1:
            raise CertificateError(f"{f}.tiles: invalid")
        values = decode_array(layer["values"], max_elements=DEFAULT_K, field=f"{f}.values")
        if values.shape != (DEFAULT_K,):
            raise CertificateError(f"{f}.values: expected {DEFAULT_K} values")
        result.append((name, tuple(shape), tiles, values))
    return result
