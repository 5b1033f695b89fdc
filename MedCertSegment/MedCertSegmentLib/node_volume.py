"""Between MRML volume nodes and ``medcert.volume.Volume``: voxels, geometry and, for DICOM, the original files.

A node loaded from DICOM carries ``DICOM.instanceUIDs``; when a lookup (SOP Instance UID → file, e.g. the
DICOM database) finds every file, the Volume is read from those original files so the certificate binds the
DICOM data, not Slicer's copy of it.

>>> vol = volume_for_node(node)                                   # voxels and geometry of the node
>>> vol = volume_for_node(node, lookup=slicer.dicomDatabase.fileForInstance)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import slicer
import vtk
from medcert.errors import InputError
from medcert.io import canonical_voxels, load_volume
from medcert.volume import StudyIdentity, Volume

from MedCertSegmentLib import attributes

InstanceLookup = Callable[[str], "str | None"]
INSTANCE_UIDS_ATTRIBUTE = attributes.INSTANCE_UIDS
GEOMETRY_DECIMALS = 9


def node_ijk_to_ras(node) -> np.ndarray:
    """The node's own IJK→RAS matrix (parent transforms are not applied), rounded to 1e-9 mm.

    Slicer rebuilds the matrix from spacing, origin and directions, so saving and loading a scene can move
    entries by one ulp (2.5 → 2.4999999999999996). Rounding far below the source digest's 1e-6 mm makes the
    same node give the same Volume before and after, so values derived from the geometry (voxel volume, ...)
    replay exactly.
    """
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.round(slicer.util.arrayFromVTKMatrix(m).astype(np.float64), GEOMETRY_DECIMALS) + 0.0


def node_voxels(node) -> np.ndarray:
    """A copy of the node's voxels indexed ``[i, j, k]`` (VTK stores them ``[k, j, i]``)."""
    if node is None or node.GetImageData() is None:
        raise InputError("the volume node holds no image data")
    arr = slicer.util.arrayFromVolume(node)
    if arr.ndim != 3:
        raise InputError(f"volume node '{node.GetName()}' is not a scalar 3-D volume (array shape {arr.shape})")
    return np.array(np.transpose(arr, (2, 1, 0)), order="F")


def volume_from_node(node) -> Volume:
    """The node's voxels and geometry as a Volume; identity from the node name (no DICOM UIDs)."""
    identity = StudyIdentity(source_format="nrrd", source_name=node.GetName() or "volume")
    return Volume(voxels=canonical_voxels(node_voxels(node)), ijk_to_ras=node_ijk_to_ras(node), identity=identity)


def instance_uids(node) -> list[str]:
    """SOP Instance UIDs of a DICOM-loaded node (``DICOM.instanceUIDs``, space separated); empty otherwise."""
    value = node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) if node is not None else None
    return value.split() if value else []


def source_files(node, lookup: InstanceLookup) -> dict[str, Path] | None:
    """The node's original DICOM files (SOP Instance UID → path) via ``lookup``; None when not from DICOM.

    InputError when some instance has no file (e.g. the database was moved), naming how many are missing.
    """
    uids = instance_uids(node)
    if not uids:
        return None
    files: dict[str, Path] = {}
    missing = []
    for uid in uids:
        found = lookup(uid)
        path = Path(found) if found else None
        if path is None or not path.is_file():
            missing.append(uid)
        else:
            files[uid] = path
    if missing:
        raise InputError(f"{len(missing)} of {len(uids)} DICOM instances of '{node.GetName()}' have no file "
                         f"(first: {missing[0]}); reload the study from the DICOM database")
    return files


def own_folder(files: list[Path]) -> Path | None:
    """The files' common folder when it holds exactly these files (a DICOM database series folder), else None."""
    parents = {f.parent for f in files}
    if len(parents) != 1:
        return None
    folder = parents.pop()
    return folder if sum(1 for p in folder.iterdir() if p.is_file()) == len(set(files)) else None


def link_files(files: list[Path], dest: Path) -> Path:
    """Hard links (copies where linking fails) of ``files`` in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for n, f in enumerate(files):
        target = dest / f"{n:05d}.dcm"
        try:
            os.link(f, target)
        except OSError:
            shutil.copyfile(f, target)
    return dest


@contextlib.contextmanager
def series_folder(files: list[Path]) -> Iterator[Path]:
    """A folder holding exactly ``files``: their own folder when possible, else a temporary one."""
    folder = own_folder(files)
    if folder is not None:
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="medcert-series-") as tmp:
        yield link_files(files, Path(tmp))


def dicom_series_uid(path: Path) -> str | None:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
    return str(ds.get("SeriesInstanceUID", "")) or None


def dicom_volume(node, files: dict[str, Path]) -> Volume:
    """The Volume read from the node's original DICOM files; InputError if it is not the node's series."""
    paths = list(files.values())
    with series_folder(paths) as folder:
        vol = load_volume(folder, series_uid=dicom_series_uid(paths[0]))
    got = vol.identity.instance_uids
    if set(got) != set(files):
        raise InputError(f"the DICOM files of '{node.GetName()}' form a series of {len(got)} instances, "
                         f"the node lists {len(files)}")
    identity = dataclasses.replace(vol.identity, source_name=node.GetName() or vol.identity.source_name,
                                   source_files=tuple(str(files[uid]) for uid in got))
    return dataclasses.replace(vol, identity=identity)


def volume_for_node(node, lookup: InstanceLookup | None = None) -> Volume:
    """From the original DICOM files when the node came from DICOM and ``lookup`` is given, else from the node."""
    files = source_files(node, lookup) if lookup is not None else None
    return dicom_volume(node, files) if files else volume_from_node(node)


def dicom_database_lookup() -> InstanceLookup | None:
    """``slicer.dicomDatabase.fileForInstance`` when Slicer has an open DICOM database, else None."""
    db = getattr(slicer, "dicomDatabase", None)
    if db is None or not getattr(db, "isOpen", False):
        return None
    return lambda uid: db.fileForInstance(uid) or None


def add_array_node(scene, voxels: np.ndarray, ijk_to_ras: np.ndarray, name: str,
                   class_name: str = "vtkMRMLScalarVolumeNode"):
    """A new volume node (scalar or labelmap) holding ``voxels`` ([i, j, k]) on the given grid."""
    node = scene.AddNewNodeByClass(class_name, name)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.asarray(ijk_to_ras, dtype=np.float64)))
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(np.transpose(voxels, (2, 1, 0))))
    return node
