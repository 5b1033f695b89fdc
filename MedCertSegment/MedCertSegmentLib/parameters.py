"""The module's parameter node (Slicer only: ``slicer.parameterNodeWrapper`` needs the application)."""

from __future__ import annotations

import pathlib
from typing import Annotated

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper

DEVICES = ["cpu", "cuda"]


@parameterNodeWrapper
class MedCertSegmentParameterNode:
    """inputVolume: CT to segment; signingKey: Ed25519 private key (PEM); weightsFile: safetensors weights,
    empty for the bundled demo model; outputFolder: sidecar and files, empty for beside the study;
    exportDicomSeg: also write a DICOM SEG carrying the certificate (volumes loaded from DICOM only);
    outputSegmentation: the latest certified segmentation."""

    inputVolume: vtkMRMLScalarVolumeNode
    signingKey: pathlib.Path
    weightsFile: pathlib.Path
    outputFolder: pathlib.Path
    device: Annotated[str, Choice(DEVICES)] = "cpu"
    exportDicomSeg: bool = False
    outputSegmentation: vtkMRMLSegmentationNode


def optional_path(value: pathlib.Path | None) -> pathlib.Path | None:
    """An unset path widget reads as ``Path('.')`` or ``Path('')``: None."""
    return None if value is None or str(value) in ("", ".") else value
