"""One dtype per set of decoded values, so the same study gives the same bytes whatever file it came from."""

from __future__ import annotations

import numpy as np

from medcert.errors import InputError

INT16 = np.iinfo(np.int16)
INT32 = np.iinfo(np.int32)
_SLAB = 1 << 22  # elements scanned at a time, to bound temporary memory


def _slabs(arr: np.ndarray):
    """Views of ``arr`` along its last axis, each about ``_SLAB`` elements (contiguous for F-order data)."""
    if arr.ndim == 0 or arr.size == 0:
        yield arr
        return
    per = max(1, arr.size // max(1, arr.shape[-1]))
    step = max(1, _SLAB // per)
    for start in range(0, arr.shape[-1], step):
        yield arr[..., start:start + step]


def canonical_dtype(values: np.ndarray) -> np.dtype:
    """The dtype :func:`canonical_voxels` gives ``values``; InputError for NaN/Inf or non-numeric data."""
    arr = np.asarray(values)
    kind = arr.dtype.kind
    if kind == "b":
        return np.dtype(np.int16)
    if kind not in "iuf":
        raise InputError(f"voxel values of type {arr.dtype} are not supported (expected integers or reals)")
    if arr.size == 0:
        return np.dtype(np.int16)
    if kind in "iu" and arr.dtype.itemsize == 1:
        return np.dtype(np.int16)
    if kind == "i" and arr.dtype.itemsize == 2:
        return np.dtype(np.int16)
    lo, hi, integral = None, None, True
    for slab in _slabs(arr):
        if kind == "f":
            if not np.isfinite(slab).all():
                raise InputError("voxel values include NaN or infinity")
            if integral and not np.array_equal(slab, np.trunc(slab)):
                integral = False
        s_lo, s_hi = slab.min(), slab.max()
        lo = s_lo if lo is None else min(lo, s_lo)
        hi = s_hi if hi is None else max(hi, s_hi)
    if integral and INT16.min <= lo and hi <= INT16.max:
        return np.dtype(np.int16)
    if integral and INT32.min <= lo and hi <= INT32.max:
        return np.dtype(np.int32)
    return np.dtype(np.float32)


def canonical_voxels(values: np.ndarray) -> np.ndarray:
    """Decoded values as int16 if every value is an integer in int16 range, elif int32, else float32.

    Floats must be finite (InputError otherwise). The memory layout (C or Fortran) is kept.
    """
    arr = np.asarray(values)
    dtype = canonical_dtype(arr)
    return arr.astype(dtype, order="K", copy=False)
