"""MRML nodes for a verification report: checks table, per-layer deviation chart, differences segment."""

from __future__ import annotations

import json

import numpy as np
import vtk
from medcert.verify import CHECKS, VerificationReport
from MedCertSegmentLib import attributes, mrml_outputs

CHECK_COLUMNS = ("Check", "Status", "Code", "Reason", "Figures")
DIFFERENCES_SEGMENT = "differences"
DIFFERENCES_COLOR = (1.0, 0.0, 1.0)


def check_rows(report: VerificationReport) -> list[list[str]]:
    """One row per check, in the report's canonical order, then any extra checks."""
    names = [n for n in CHECKS if n in report.checks] + [n for n in report.checks if n not in CHECKS]
    rows = []
    for name in names:
        c = report.checks[name]
        figures = json.dumps(c.figures, sort_keys=True, default=str) if c.figures else ""
        rows.append([name, c.status.upper(), c.code, c.reason, figures])
    return rows


def checks_table(scene, report: VerificationReport, name: str):
    """A table node of the checks; verdict and trace id as node attributes."""
    node = mrml_outputs.string_table(scene, name, CHECK_COLUMNS, check_rows(report))
    node.SetAttribute(attributes.VERDICT, report.verdict)
    node.SetAttribute(attributes.TRACE_ID, report.trace_id or "")
    return node


def _numeric_column(name: str, values) -> vtk.vtkDoubleArray:
    col = vtk.vtkDoubleArray()
    col.SetName(name)
    for v in values:
        col.InsertNextValue(float(v))
    return col


def deviation_chart(scene, report: VerificationReport, name: str):
    """Per-layer replay deviation against the tolerance as a plot chart; None when the replay did not run."""
    rows = report.layer_deviations
    if not rows:
        return None
    table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} data")
    table = table_node.GetTable()
    layers = vtk.vtkStringArray()
    layers.SetName("Layer")
    for layer, _, _ in rows:
        layers.InsertNextValue(layer)
    table.AddColumn(layers)
    table.AddColumn(_numeric_column("Index", range(len(rows))))
    table.AddColumn(_numeric_column("Deviation", [d for _, d, _ in rows]))
    table.AddColumn(_numeric_column("Tolerance", [t for _, _, t in rows]))
    table_node.Modified()
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
    for column, plot_type, color in (("Deviation", "Bar", (0.2, 0.4, 0.8)), ("Tolerance", "Line", (0.85, 0.1, 0.1))):
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {column.lower()}")
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName("Index")
        series.SetYColumnName(column)
        series.SetLabelColumnName("Layer")
        series.SetPlotType(series.GetPlotTypeFromString(plot_type))
        series.SetColor(*color)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    chart.SetTitle("Replay deviation per layer")
    chart.SetXAxisTitle("layer")
    chart.SetYAxisTitle("relative deviation")
    values = np.array([[d, t] for _, d, t in rows], dtype=np.float64)
    chart.SetYAxisLogScale(bool(np.all(values > 0)))
    chart.SetAttribute(attributes.TRACE_ID, report.trace_id or "")
    return chart


def differences_segmentation(scene, volume_node, differences: np.ndarray | None, ijk_to_ras: np.ndarray,
                             name: str):
    """A segmentation with one segment holding the voxels where the stored mask differs from the replay."""
    if differences is None:
        return None
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    segmentation = node.GetSegmentation()
    segmentation.AddEmptySegment(DIFFERENCES_SEGMENT, DIFFERENCES_SEGMENT, DIFFERENCES_COLOR)
    mrml_outputs.fill_segments(scene, node, (np.asarray(differences) != 0).astype(np.uint8), ijk_to_ras,
                               {1: DIFFERENCES_SEGMENT})
    node.SetAttribute(attributes.DIFFERING_VOXELS, str(int(np.count_nonzero(differences))))
    mrml_outputs.place_beside(scene, node, volume_node)
    return node
