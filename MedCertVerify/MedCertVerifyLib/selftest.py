"""The scenario shared by the module's Slicer self-test and the pytest suite: certify, verify, tamper, verify.

A certified segmentation verifies PASS; after one voxel is removed from a segment, ``output_record`` fails
and the differences segment holds exactly that voxel.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import vtk
from MedCertSegmentLib.certificate_node import read_certificate
from MedCertSegmentLib.logic import label_names
from MedCertSegmentLib.node_volume import volume_from_node
from MedCertSegmentLib.selftest import SelfTestFiles, run_segment_scenario

from MedCertVerifyLib.logic import VerifyLogic, VerifyResult
from MedCertVerifyLib.stored_mask import labels_on_grid


def voxel_to_remove(segmentation_node, volume_node) -> tuple[str, tuple[int, int, int]]:
    """A voxel (volume grid ``[i, j, k]``) of the largest certified segment, and that segment's name."""
    names: Mapping[int, str] = label_names(read_certificate(segmentation_node))
    volume = volume_from_node(volume_node)
    labels = labels_on_grid(segmentation_node.GetScene(), segmentation_node, volume, names)
    counts = np.bincount(labels.reshape(-1), minlength=max(names) + 1)
    value = max(names, key=lambda v: counts[v])
    assert counts[value] > 0, "the segmentation is empty"
    return names[value], tuple(int(v) for v in np.argwhere(labels == value)[0])


def remove_voxel(segmentation_node, segment_name: str, ijk: tuple[int, int, int], ijk_to_ras: np.ndarray) -> None:
    """Take voxel ``ijk`` (of the volume grid) out of a segment, editing the segment's own labelmap."""
    segmentation = segmentation_node.GetSegmentation()
    sid = segmentation.GetSegmentIdBySegmentName(segment_name)
    segment = segmentation.GetSegment(sid)
    image = segmentation_node.GetBinaryLabelmapInternalRepresentation(sid)
    world_to_image = vtk.vtkMatrix4x4()
    image.GetWorldToImageMatrix(world_to_image)
    ras = np.asarray(ijk_to_ras) @ np.array([*ijk, 1.0])
    m = np.array([[world_to_image.GetElement(r, c) for c in range(4)] for r in range(4)])
    i, j, k = (int(np.rint(v)) for v in (m @ ras)[:3])
    e = image.GetExtent()
    assert e[0] <= i <= e[1] and e[2] <= j <= e[3] and e[4] <= k <= e[5], "voxel outside the segment's labelmap"
    scalars = image.GetPointData().GetScalars()
    dims = (e[1] - e[0] + 1, e[3] - e[2] + 1)
    index = (i - e[0]) + dims[0] * ((j - e[2]) + dims[1] * (k - e[4]))
    assert int(scalars.GetTuple1(index)) == segment.GetLabelValue(), "voxel is not in the segment"
    scalars.SetTuple1(index, 0)
    scalars.Modified()
    image.Modified()
    segment.Modified()


def verify_with(scene, volume_node, segmentation_node, files: SelfTestFiles) -> VerifyResult:
    return VerifyLogic(scene).verify(volume_node, segmentation_node, trusted_keys=[files.public_key],
                                     weights_path=files.weights, audit_db=files.audit_db)


def run_verify_scenario(scene, work: str | Path) -> tuple[VerifyResult, VerifyResult, tuple[int, int, int]]:
    """PASS on the certified segmentation, then FAIL with exactly one differing voxel after an edit."""
    volume_node, seg, files = run_segment_scenario(scene, work)
    passed = verify_with(scene, volume_node, seg.segmentation, files)
    assert passed.verdict == "PASS", passed.report.render()
    name, voxel = voxel_to_remove(seg.segmentation, volume_node)
    remove_voxel(seg.segmentation, name, voxel, volume_from_node(volume_node).ijk_to_ras)
    failed = verify_with(scene, volume_node, seg.segmentation, files)
    assert failed.report.checks["output_record"].status == "fail", failed.report.render()
    differing = [tuple(int(v) for v in p) for p in np.argwhere(failed.report.differences != 0)]
    assert differing == [voxel], f"differences {differing[:5]} != {voxel}"
    return passed, failed, voxel
