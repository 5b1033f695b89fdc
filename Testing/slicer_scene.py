"""A headless MRML scene with the module logics MedCert's Slicer modules need (real slicer-core, no Qt).

Mirrors what Slicer's application does at startup (and what trame-slicer's ``SlicerApp`` does): scene,
application logic with default color nodes, volumes / terminologies / segmentations / subject hierarchy
logics, and remote IO logic so ``.mrb`` bundles can be read. ``slicer.mrmlScene`` points at the scene.

>>> app = HeadlessSlicer(cache_dir)
>>> node = app.add_volume(voxels_ijk, ijk_to_ras, "CT")
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
for _module_dir in ("MedCertSegment", "MedCertVerify"):  # the installed extension has these on sys.path
    if str(REPO / _module_dir) not in sys.path:
        sys.path.insert(0, str(REPO / _module_dir))

import slicer  # noqa: E402
from vtkmodules.vtkCommonCore import vtkCollection  # noqa: E402


def terminologies_dir() -> Path | None:
    """Slicer's standard terminology files, as shipped with trame-slicer."""
    try:
        from trame_slicer.resources import resources_path
    except ImportError:
        return None
    folder = Path(resources_path()) / "terminologies"
    return folder if folder.is_dir() else None


class HeadlessSlicer:
    """Scene + logics; ``close()`` releases them."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.scene = slicer.vtkMRMLScene()
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        self.app_logic.GetColorLogic().SetMRMLScene(self.scene)
        self.app_logic.GetColorLogic().AddDefaultColorNodes()
        self.app_logic.SetSliceLogics(vtkCollection())
        self.app_logic.SetViewLogics(vtkCollection())
        terms = terminologies_dir()
        self.volumes_logic = self._register(slicer.vtkSlicerVolumesLogic(), "Volumes")
        self.terminologies_logic = self._register(slicer.vtkSlicerTerminologiesModuleLogic(), "Terminologies",
                                                  terms)
        self.segmentations_logic = self._register(slicer.vtkSlicerSegmentationsModuleLogic(), "Segmentations")
        self.subject_hierarchy_logic = self._register(slicer.vtkSlicerSubjectHierarchyModuleLogic(),
                                                      "SubjectHierarchy")
        # .mrb reading needs the remote IO / data IO manager pair (as in Slicer's application)
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        self.remote_io = slicer.vtkMRMLRemoteIOLogic()
        self.remote_io.SetMRMLScene(self.scene)
        self.remote_io.SetMRMLApplicationLogic(self.app_logic)
        self.remote_io.GetCacheManager().SetRemoteCacheDirectory(str(cache_dir))
        self.data_io_logic = slicer.vtkDataIOManagerLogic()
        self.data_io_logic.SetMRMLScene(self.scene)
        self.data_io_logic.SetMRMLApplicationLogic(self.app_logic)
        self.data_io_logic.SetAndObserveDataIOManager(self.remote_io.GetDataIOManager())
        self.remote_io.AddDataIOToScene()
        slicer.mrmlScene = self.scene

    def _register(self, logic, name: str, share: Path | None = None):
        if share is not None:
            logic.SetModuleShareDirectory(str(share))
        logic.SetMRMLScene(self.scene)
        logic.SetMRMLApplicationLogic(self.app_logic)
        self.app_logic.SetModuleLogic(name, logic)
        return logic

    @property
    def subject_hierarchy(self):
        return self.scene.GetSubjectHierarchyNode()

    def add_volume(self, voxels_ijk: np.ndarray, ijk_to_ras: np.ndarray, name: str):
        """A scalar volume node holding ``voxels_ijk`` ([i, j, k]) with the given IJK→RAS matrix."""
        node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.asarray(ijk_to_ras, dtype=float)))
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(np.transpose(voxels_ijk, (2, 1, 0))))
        node.CreateDefaultDisplayNodes()
        return node

    def add_dicom_volume(self, series, name: str = "CT from DICOM"):
        """A volume node as Slicer's DICOM loading leaves it (the series' voxels plus ``DICOM.instanceUIDs``)
        and the ``SOP Instance UID -> path`` dict a DICOM database lookup would answer with."""
        from medcert.io import load_volume

        vol = load_volume(series.folder, series.series_uid)
        node = self.add_volume(vol.voxels, vol.ijk_to_ras, name)
        node.SetAttribute("DICOM.instanceUIDs", " ".join(series.sop_uids))
        return node, {uid: str(path) for uid, path in zip(series.sop_uids, series.files, strict=True)}

    def save_mrb(self, path: str | Path) -> Path:
        path = Path(path)
        self.scene.SetRootDirectory(str(path.parent))
        if not self.scene.WriteToMRB(str(path)):
            raise RuntimeError(f"WriteToMRB failed: {path}")
        return path

    def load_mrb(self, path: str | Path) -> None:
        if not self.scene.ReadFromMRB(str(path), True):
            raise RuntimeError(f"ReadFromMRB failed: {path}")

    def close(self) -> None:
        self.scene.Clear(True)
        if getattr(slicer, "mrmlScene", None) is self.scene:
            slicer.mrmlScene = None
