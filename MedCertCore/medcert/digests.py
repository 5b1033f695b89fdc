"""SHA-256 digests: encoding helpers and array digests with a declared header.

An array digest is SHA-256 over ``domain || 0x00 || JCS(header) || 0x00 || bytes`` where the header names
dtype, shape and (for voxel grids) the geometry, so equal bytes with another meaning never collide.
Voxel grids are hashed in Fortran order of ``[i, j, k]`` (i fastest), little-endian.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import numpy as np

from medcert.canonical import canonical_bytes

CHUNK = 1 << 24
_B64U = re.compile(r"[A-Za-z0-9_-]*")


def b64u(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str) -> bytes:
    """Inverse of :func:`b64u`; strict: ValueError unless ``text`` is exactly what :func:`b64u` writes.

    The standard decoder skips foreign characters and ignores unused trailing bits, so several strings
    would decode to the same bytes; an unsigned field (a signature) could then be altered unnoticed.
    """
    if not isinstance(text, str) or not _B64U.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64u(raw) != text:
        raise ValueError("non-canonical base64url (unused bits set)")
    return raw


def b64u_sha256(data: bytes) -> str:
    """SHA-256 of ``data`` as unpadded base64url (43 characters)."""
    return b64u(hashlib.sha256(data).digest())


def geometry_list(ijk_to_ras: np.ndarray) -> list[float]:
    """The 4×4 matrix row-major, rounded to 1e-6 mm so writer-specific float noise does not matter."""
    m = np.asarray(ijk_to_ras, dtype=np.float64)
    return [float(round(v, 6)) + 0.0 for v in m.reshape(-1)]


def array_digest(array: np.ndarray, *, domain: str, header: dict[str, Any] | None = None,
                 order: str = "C") -> str:
    """Digest of an array with its dtype and shape (plus ``header`` fields) bound in."""
    arr = np.asarray(array)
    le = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    arr = arr.astype(le, copy=False)
    head = {"dtype": "<" + le.str[1:] if le.itemsize > 1 else "|" + le.str[1:],
            "shape": [int(s) for s in arr.shape], "order": order}
    head.update(header or {})
    h = hashlib.sha256()
    h.update(domain.encode("ascii") + b"\x00" + canonical_bytes(head) + b"\x00")
    # Fortran order of [i, j, k] equals C order of the transposed view.
    flat = arr.T if order == "F" else arr
    flat = np.ascontiguousarray(flat)
    buf = memoryview(flat.reshape(-1)).cast("B")
    for start in range(0, len(buf), CHUNK):
        h.update(buf[start:start + CHUNK])
    return b64u(h.digest())


def grid_digest(voxels: np.ndarray, ijk_to_ras: np.ndarray, *, domain: str,
                header: dict[str, Any] | None = None) -> str:
    """Digest of a voxel grid (``[i, j, k]``, Fortran order) bound to its geometry."""
    head = {"ijk_to_ras": geometry_list(ijk_to_ras)}
    head.update(header or {})
    return array_digest(voxels, domain=domain, header=head, order="F")
