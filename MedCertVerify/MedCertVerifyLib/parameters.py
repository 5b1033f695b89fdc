"""The module's parameter node (Slicer only: ``slicer.parameterNodeWrapper`` needs the application)."""

from __future__ import annotations

import pathlib
from typing import Annotated

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper

DEVICES = ["cpu", "cuda"]


@parameterNodeWrapper
class MedCertVerifyParameterNode:
    """inputVolume: the study as loaded; certifiedSegmentation: carries the certificate and is the output
    record checked (one loaded from the DICOM database: its DICOM SEG file is used); sidecarFile: verify a
    sidecar's certificate instead (empty: the attached one), or cross-check the DICOM SEG; dicomSegFile: a DICOM
    SEG as certificate carrier and output record (empty: none); trustedKeys:
    public key file or folder of *.pub.pem; weightsFile: empty to check signature and output record only."""

    inputVolume: vtkMRMLScalarVolumeNode
    certifiedSegmentation: vtkMRMLSegmentationNode
    sidecarFile: pathlib.Path
    dicomSegFile: pathlib.Path
    trustedKeys: pathlib.Path
    weightsFile: pathlib.Path
    traceId: str = ""
    device: Annotated[str, Choice(DEVICES)] = "cpu"


def optional_path(value: pathlib.Path | None) -> pathlib.Path | None:
    """An unset path widget reads as ``Path('.')`` or ``Path('')``: None."""
    return None if value is None or str(value) in ("", ".") else value
