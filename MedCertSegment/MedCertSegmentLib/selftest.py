"""The scenario shared by the module's Slicer self-test and the pytest suite: certify a small synthetic CT.

Uses the seeded, untrained placeholder weights (fast, deterministic; outputs meaningless) and a fresh key pair
in ``work``; nothing outside ``work`` is written (the audit log too lives there).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from MedCertSegmentLib.certificate_node import read_certificate
from MedCertSegmentLib.logic import SegmentLogic, SegmentResult
from MedCertSegmentLib.node_volume import add_array_node
from MedCertSegmentLib.terminology import STANDARD_TERMS


@dataclass(frozen=True)
class SelfTestFiles:
    work: Path
    weights: Path
    private_key: Path
    public_key: Path
    audit_db: Path


def synthetic_chest(shape: tuple[int, int, int] = (48, 48, 16), seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """A small chest-like CT in HU (body, two air-filled lungs, one dense blob) and its IJK→RAS matrix."""
    from medcert.phantom.toy import toy_chest_ct

    return toy_chest_ct(shape, seed=seed, margin=2, blob_r2=6.0)


def prepare_files(work: str | Path) -> SelfTestFiles:
    """Placeholder weights and a new key pair under ``work``."""
    from medcert.keys import generate_keypair
    from medcert.models.placeholder import write_placeholder_weights

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    weights = write_placeholder_weights(work / "placeholder.safetensors")
    private, public = generate_keypair(Path(tempfile.mkdtemp(prefix="keys-", dir=work)))
    return SelfTestFiles(work, weights, private, public, work / "audit.sqlite")


def add_synthetic_volume(scene, name: str = "MedCert synthetic chest"):
    voxels, ijk_to_ras = synthetic_chest()
    node = add_array_node(scene, voxels, ijk_to_ras, name)
    node.CreateDefaultDisplayNodes()
    return node


def run_segment_scenario(scene, work: str | Path, volume_node=None) -> tuple[object, SegmentResult, SelfTestFiles]:
    """Certify a synthetic (or the given) volume into ``scene`` and check the result; AssertionError on a fault."""
    files = prepare_files(work)
    volume_node = volume_node or add_synthetic_volume(scene)
    result = SegmentLogic(scene).segment(volume_node, files.private_key, weights_path=files.weights,
                                         output_folder=files.work / "outputs", audit_db=files.audit_db)
    check_segment_result(result)
    return volume_node, result, files


def check_segment_result(result: SegmentResult) -> None:
    """The segmentation holds named, coded segments and carries the signed certificate."""
    segmentation = result.segmentation.GetSegmentation()
    names = {segmentation.GetNthSegment(n).GetName() for n in range(segmentation.GetNumberOfSegments())}
    assert set(STANDARD_TERMS) <= names, f"segments {sorted(names)}"
    for name, term in STANDARD_TERMS.items():
        segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(name))
        assert segment.GetTerminology() == term.serialized(), f"terminology of {name}"
    attached = read_certificate(result.segmentation)
    assert attached.core == result.record.core and attached.evidence == result.record.evidence
    assert result.sidecar is not None and result.sidecar.is_file(), "sidecar not written"
