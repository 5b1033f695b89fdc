"""MRML nodes for a certified run: segmentation with standard terminology, anomaly map, findings table.

Every function takes the scene explicitly, so it runs in Slicer and on a headless ``vtkMRMLScene`` alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import slicer
import vtk

from MedCertSegmentLib.node_volume import add_array_node
from MedCertSegmentLib.terminology import color_for, term_for

ALGORITHM_TYPE_TAG = "DICOM.SegmentAlgorithmType"
ALGORITHM_NAME_TAG = "DICOM.SegmentAlgorithmName"
ANOMALY_COLORS = ("vtkMRMLColorTableNodeFileInferno.txt", "vtkMRMLPETProceduralColorNodePET-Heat",
                  "vtkMRMLColorTableNodeRed")
FINDINGS_COLUMNS = ("Structure", "Voxels", "Volume (mL)", "Diameter (mm)", "Centroid RAS (mm)", "Max probability")


def segment_ids_by_value(segmentation_node, label_names: Mapping[int, str]) -> dict[int, str]:
    """Segment id per label value, adding a named, colored, coded segment for each label not present yet."""
    segmentation = segmentation_node.GetSegmentation()
    ids: dict[int, str] = {}
    for value, name in sorted(label_names.items()):
        sid = segmentation.GetSegmentIdBySegmentName(name)
        if not sid:
            wanted = "_".join(name.split()) or f"label_{value}"
            sid = segmentation.AddEmptySegment(wanted if not segmentation.GetSegment(wanted) else "", name,
                                               color_for(name))
        segment = segmentation.GetSegment(sid)
        term = term_for(name)
        if term is not None:
            segment.SetTerminology(term.serialized())
        ids[value] = sid
    return ids


def fill_segments(scene, segmentation_node, labels: np.ndarray, ijk_to_ras: np.ndarray,
                  label_names: Mapping[int, str]) -> dict[int, str]:
    """Replace the segments' contents by ``labels`` ([i, j, k] on the ``ijk_to_ras`` grid), one per label value."""
    present = {int(v) for v in np.unique(labels)} - {0}
    names = dict(label_names)
    names.update({v: f"label {v}" for v in present if v not in names})
    ids = segment_ids_by_value(segmentation_node, names)
    order = vtk.vtkStringArray()  # label value v is imported into segment order[v - 1]
    for value in range(1, max(names) + 1):
        order.InsertNextValue(ids.get(value, ""))
    temp = add_array_node(scene, labels.astype(np.uint8), ijk_to_ras, "MedCert labels (temporary)",
                          "vtkMRMLLabelMapVolumeNode")
    try:
        for sid in ids.values():  # empty every segment first: a label absent from ``labels`` leaves it empty
            segmentation_node.GetSegmentation().ClearSegment(sid)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(temp, segmentation_node,
                                                                                        order):
            raise RuntimeError("importing the labelmap into the segmentation failed")
    finally:
        scene.RemoveNode(temp)
    return ids


def set_algorithm_tags(segmentation_node, algorithm_name: str) -> None:
    """Mark every segment as AUTOMATIC output of ``algorithm_name`` (read by Slicer's DICOM SEG export)."""
    segmentation = segmentation_node.GetSegmentation()
    for n in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(n)
        segment.SetTag(ALGORITHM_TYPE_TAG, "AUTOMATIC")
        segment.SetTag(ALGORITHM_NAME_TAG, algorithm_name[:64])


def create_segmentation(scene, volume_node, labels: np.ndarray, ijk_to_ras: np.ndarray,
                        label_names: Mapping[int, str], name: str, algorithm_name: str):
    """A segmentation node on the volume's geometry holding ``labels``, placed beside the volume."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    fill_segments(scene, node, labels, ijk_to_ras, label_names)
    set_algorithm_tags(node, algorithm_name)
    place_beside(scene, node, volume_node)
    return node


def study_item(scene, node) -> int:
    """Subject hierarchy item of the study holding ``node`` (else its parent, else the scene item)."""
    sh = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    item = sh.GetItemByDataNode(node)
    if not item:
        return sh.GetSceneItemID()
    study_level = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMLevelStudy()
    parent = sh.GetItemParent(item)
    ancestor = parent
    while ancestor and ancestor != sh.GetSceneItemID():
        if sh.GetItemLevel(ancestor) == study_level:
            return ancestor
        ancestor = sh.GetItemParent(ancestor)
    return parent or sh.GetSceneItemID()


def place_beside(scene, node, volume_node) -> int:
    """Put ``node`` under the volume's study in the subject hierarchy, under the volume's transform too."""
    sh = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    parent = study_item(scene, volume_node)
    item = sh.GetItemByDataNode(node)
    if item:
        sh.SetItemParent(item, parent)
    else:
        item = sh.CreateItem(parent, node)
    transform_id = volume_node.GetTransformNodeID()
    if transform_id and hasattr(node, "SetAndObserveTransformNodeID"):
        node.SetAndObserveTransformNodeID(transform_id)
    return item


def first_color_node_id(scene, candidates: Sequence[str]) -> str | None:
    return next((c for c in candidates if scene.GetNodeByID(c) is not None), None)


def add_probability_map(scene, values: np.ndarray, ijk_to_ras: np.ndarray, name: str, volume_node):
    """A scalar volume of probabilities (0..1) with a heat color map, window 0..1 and values < 0.05 hidden."""
    node = add_array_node(scene, values.astype(np.float32), ijk_to_ras, name)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    color = first_color_node_id(scene, ANOMALY_COLORS)
    if color:
        display.SetAndObserveColorNodeID(color)
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)
    display.AutoThresholdOff()
    display.SetThreshold(0.05, 1.0)
    display.ApplyThresholdOn()
    place_beside(scene, node, volume_node)
    return node


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def findings_rows(findings: Mapping[str, Any]) -> list[list[str]]:
    """Rows of FINDINGS_COLUMNS: one per organ, then one per finding (as recorded in the certificate)."""
    rows = []
    for organ, v in (findings.get("organs") or {}).items():
        rows.append([str(organ), _fmt(v.get("voxels")), _fmt(v.get("volume_ml")), "", "", ""])
    for n, f in enumerate(findings.get("findings") or [], 1):
        side = f.get("side") or "-"
        volume_ml = f.get("volume_mm3") / 1000.0 if isinstance(f.get("volume_mm3"), int | float) else None
        centroid = ", ".join(_fmt(c, 1) for c in f.get("centroid_ras") or [])
        rows.append([f"finding {n} ({side})", _fmt(f.get("voxels")), _fmt(volume_ml, 3),
                     _fmt(f.get("equivalent_diameter_mm")), centroid, _fmt(f.get("max_probability"), 4)])
    return rows


def string_table(scene, name: str, columns: Sequence[str], rows: Sequence[Sequence[str]]):
    """A table node of string columns."""
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = node.GetTable()
    for title in columns:
        col = vtk.vtkStringArray()
        col.SetName(title)
        table.AddColumn(col)
    table.SetNumberOfRows(len(rows))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.SetValue(r, c, vtk.vtkVariant(str(value)))
    node.Modified()
    return node


def findings_table(scene, findings: Mapping[str, Any] | None, name: str, volume_node):
    """The certificate's findings as a table node; None when the certificate records none."""
    if not findings:
        return None
    node = string_table(scene, name, FINDINGS_COLUMNS, findings_rows(findings))
    place_beside(scene, node, volume_node)
    return node
