"""The output record to check: a segmentation node exported to a labelmap on the certified grid.

Label values come from segment names: the segment named like a certified label (``evidence.outputs.mask
.labels``) gets that label's value; other segments are ignored; a missing segment contributes no voxels.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import slicer
import vtk
from medcert.verify import StoredMask
from medcert.volume import Volume
from MedCertSegmentLib.node_volume import add_array_node


def segment_ids_for_labels(segmentation_node, label_names: Mapping[int, str]) -> dict[int, str]:
    """Label value → segment id, for each certified label name the segmentation has a segment of."""
    segmentation = segmentation_node.GetSegmentation()
    found = {}
    for value, name in sorted(label_names.items()):
        sid = segmentation.GetSegmentIdBySegmentName(name)
        if sid:
            found[value] = sid
    return found


def _remove(scene, node) -> None:
    display = node.GetDisplayNode()
    if display is not None:
        scene.RemoveNode(display)
    scene.RemoveNode(node)


def labels_on_grid(scene, segmentation_node, volume: Volume, label_names: Mapping[int, str]) -> np.ndarray:
    """uint8 labels ``[i, j, k]`` on ``volume``'s grid from the segments named like the certified labels."""
    ids = segment_ids_for_labels(segmentation_node, label_names)
    labels = np.zeros(volume.shape, dtype=np.uint8, order="F")
    if not ids:
        return labels
    order = vtk.vtkStringArray()  # exported label value n + 1 is segment order[n]
    values = np.zeros(len(ids) + 1, dtype=np.uint8)
    for n, (value, sid) in enumerate(sorted(ids.items())):
        order.InsertNextValue(sid)
        values[n + 1] = value
    grid = add_array_node(scene, labels, volume.ijk_to_ras, "MedCert grid (temporary)", "vtkMRMLLabelMapVolumeNode")
    out = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "MedCert stored mask (temporary)")
    try:
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation_node, order, out,
                                                                                    grid):
            raise RuntimeError(f"exporting segmentation '{segmentation_node.GetName()}' to a labelmap failed")
        exported = np.transpose(slicer.util.arrayFromVolume(out), (2, 1, 0))
        if exported.shape != volume.shape:
            raise RuntimeError(f"exported labelmap has shape {exported.shape}, the certified grid {volume.shape}")
        labels[...] = values[exported]
    finally:
        _remove(scene, out)
        _remove(scene, grid)
    return labels


def stored_mask_from_segmentation(scene, segmentation_node, volume: Volume,
                                  label_names: Mapping[int, str]) -> StoredMask:
    """The segmentation as the output record to check against the certificate."""
    labels = labels_on_grid(scene, segmentation_node, volume, label_names)
    return StoredMask(labels=labels, ijk_to_ras=volume.ijk_to_ras,
                      origin=f"segmentation node '{segmentation_node.GetName()}'")
