"""NRRD volumes: read any 3-D NRRD (RAS, LPS or LAS space) into RAS geometry; write scalar volumes.

Files are written in LPS like Slicer, with deterministic bytes (no timestamp; gzip with mtime 0), through
``atomic_write_bytes``. Reading uses pynrrd, so detached headers (``.nhdr``) and all encodings work.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Mapping
from pathlib import Path

import nrrd
import numpy as np

from medcert.atomic import atomic_write_bytes
from medcert.errors import InputError
from medcert.io.canonical_voxels import canonical_voxels
from medcert.volume import StudyIdentity, Volume

# Sign flips from a named NRRD space to RAS.
SPACE_TO_RAS = {
    "right-anterior-superior": (1.0, 1.0, 1.0), "ras": (1.0, 1.0, 1.0),
    "left-posterior-superior": (-1.0, -1.0, 1.0), "lps": (-1.0, -1.0, 1.0),
    "left-anterior-superior": (-1.0, 1.0, 1.0), "las": (-1.0, 1.0, 1.0),
}
LPS_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])
NRRD_TYPES = {"i1": "signed char", "u1": "unsigned char", "i2": "short", "u2": "unsigned short",
              "i4": "int", "u4": "unsigned int", "f4": "float", "f8": "double"}
GZIP_LEVEL = 4


def volume_stem(path: Path) -> str:
    """File name without ``.nrrd``/``.nhdr``/``.nii``/``.nii.gz``."""
    name = path.name
    for suffix in (".nii.gz", ".nrrd", ".nhdr", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_nrrd_grid(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(data [i, j, k], ijk_to_ras, header)`` of a 3-D NRRD; singleton non-spatial axes are dropped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"NRRD file not found: {path}")
    try:
        data, header = nrrd.read(str(path), index_order="F")
    except (nrrd.NRRDError, OSError, ValueError, EOFError, zlib.error, TypeError, KeyError) as exc:
        raise InputError(f"cannot read NRRD file {path}: {exc}") from exc
    space = str(header.get("space", "")).strip().lower()
    if not space:
        raise InputError(f"NRRD file {path} has no 'space' field, so its patient orientation is unknown")
    if space not in SPACE_TO_RAS:
        raise InputError(f"NRRD file {path}: space '{header['space']}' is not a patient space "
                         "(RAS, LPS or LAS)")
    directions = header.get("space directions")
    if directions is None:
        raise InputError(f"NRRD file {path} has no 'space directions' field")
    directions = np.asarray(directions, dtype=np.float64)
    if directions.ndim != 2 or directions.shape != (data.ndim, 3):
        raise InputError(f"NRRD file {path}: 'space directions' do not match its {data.ndim} axes")
    spatial = [a for a in range(data.ndim) if np.all(np.isfinite(directions[a]))]
    other = [a for a in range(data.ndim) if a not in spatial]
    if len(spatial) != 3:
        raise InputError(f"NRRD file {path} is not a 3-D volume (sizes {list(data.shape)}, "
                         f"{len(spatial)} spatial axes)")
    if any(data.shape[a] != 1 for a in other):
        raise InputError(f"NRRD file {path} is not a single 3-D volume: sizes {list(data.shape)} include a "
                         "non-spatial axis (components, time points or segmentation layers)")
    data = data.reshape([data.shape[a] for a in spatial], order="F") if other else data
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64).reshape(-1)
    if origin.shape != (3,) or not np.all(np.isfinite(origin)):
        raise InputError(f"NRRD file {path}: 'space origin' must be 3 finite numbers")
    m = np.eye(4)
    m[:3, :3] = directions[spatial].T
    m[:3, 3] = origin
    return data, np.diag([*SPACE_TO_RAS[space], 1.0]) @ m, header


def load_nrrd(path: str | Path) -> Volume:
    """A 3-D NRRD as a Volume (values through ``canonical_voxels``)."""
    path = Path(path)
    data, ijk_to_ras, _ = read_nrrd_grid(path)
    try:
        voxels = canonical_voxels(data)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    identity = StudyIdentity(source_format="nrrd", source_name=volume_stem(path), source_files=(str(path),))
    return Volume(voxels=voxels, ijk_to_ras=ijk_to_ras, identity=identity)


def _num(x: float) -> str:
    return repr(float(x) + 0.0)


def _vec(v: np.ndarray) -> str:
    return "(" + ",".join(_num(x) for x in v) + ")"


def _check_field(key: str, value: str) -> None:
    if any(ord(c) < 32 or ord(c) == 127 for c in key + value) or ":=" in key or not key:
        raise InputError(f"NRRD key/value field {key!r} holds a line break or control character")


def nrrd_bytes(data: np.ndarray, ijk_to_ras: np.ndarray, fields: Mapping[str, str] | None = None) -> bytes:
    """A single-file gzip NRRD (LPS space) of ``data`` [i, j, k] with key/value ``fields``."""
    arr = np.asarray(data)
    code = arr.dtype.str[1:]
    if code not in NRRD_TYPES or arr.ndim != 3:
        raise InputError(f"cannot write a {arr.ndim}-D {arr.dtype} array as a NRRD volume")
    m = np.asarray(ijk_to_ras, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)) or not np.allclose(m[3], [0, 0, 0, 1]):
        raise InputError("ijk_to_ras must be a finite 4x4 affine matrix")
    lps = LPS_FLIP @ m
    lines = [
        "NRRD0004",
        "# Complete NRRD file format specification at:",
        "# http://teem.sourceforge.net/nrrd/format.html",
        f"type: {NRRD_TYPES[code]}",
        "dimension: 3",
        "space: left-posterior-superior",
        "sizes: " + " ".join(str(int(s)) for s in arr.shape),
        "space directions: " + " ".join(_vec(lps[:3, c]) for c in range(3)),
        "kinds: domain domain domain",
        "endian: little",
        "encoding: gzip",
        "space origin: " + _vec(lps[:3, 3]),
    ]
    for key, value in (fields or {}).items():
        _check_field(key, value)
        lines.append(f"{key}:={value}")
    head = ("\n".join(lines) + "\n\n").encode("utf-8")
    raw = np.asarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes(order="F")
    return head + gzip.compress(raw, compresslevel=GZIP_LEVEL, mtime=0)


def nrrd_output_path(path: str | Path) -> Path:
    """``path`` if it names a single-file ``.nrrd``, else InputError."""
    path = Path(path)
    if not path.name.lower().endswith(".nrrd"):
        raise InputError(f"output must be a single-file .nrrd: {path}")
    return path


def write_scalar_nrrd(path: str | Path, voxels: np.ndarray, ijk_to_ras: np.ndarray, *,
                      overwrite: bool = False) -> Path:
    """Write a scalar volume [i, j, k] (int8..int32, uint8..uint32, float32/64; finite) atomically."""
    path = nrrd_output_path(path)
    arr = np.asarray(voxels)
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind in "iu" and arr.dtype.itemsize == 8:
        if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
            raise InputError(f"voxel values exceed the 32-bit integer range; not written: {path}")
        arr = arr.astype(np.int32, order="K")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise InputError(f"volume holds NaN or infinity; not written: {path}")
    return atomic_write_bytes(path, nrrd_bytes(arr, ijk_to_ras), overwrite=overwrite)
