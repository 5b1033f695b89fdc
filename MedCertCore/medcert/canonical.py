"""Canonical JSON (RFC 8785) and the base64 array codec used in certificates and sidecars."""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import numpy as np
import rfc8785

from medcert.errors import CertificateError

ALLOWED_DTYPES = ("<f4", "<f8", "<i2", "<i4", "<u1", "<u2", "<u4", "<i8")


def canonical_bytes(obj: Any) -> bytes:
    """RFC 8785 bytes of ``obj``. Refuses NaN/Inf and integers beyond 2^53-1 (CertificateError)."""
    try:
        return rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise CertificateError(f"value cannot be canonicalized: {exc}") from exc


def finite(x: float) -> float:
    """Return ``x`` as float, refusing NaN/Inf before it reaches signed JSON."""
    x = float(x)
    if not math.isfinite(x):
        raise CertificateError("non-finite number cannot be certified")
    return x


def encode_array(a: np.ndarray) -> dict[str, Any]:
    """``{"dtype", "shape", "data"}`` with little-endian C-order bytes in standard base64."""
    arr = np.asarray(a)
    dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder not in ("<", "|") else arr.dtype
    dtype = np.dtype(dt).str if np.dtype(dt).itemsize > 1 else "<" + np.dtype(dt).str[1:]
    if dtype not in ALLOWED_DTYPES:
        raise CertificateError(f"array dtype {arr.dtype} is not allowed in a certificate")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise CertificateError("array holds NaN or Inf and cannot be certified")
    data = np.ascontiguousarray(arr, dtype=np.dtype(dtype)).tobytes(order="C")
    return {"dtype": dtype, "shape": [int(s) for s in arr.shape], "data": base64.b64encode(data).decode("ascii")}


def decode_array(obj: Any, *, max_elements: int = 1 << 24, field: str = "array") -> np.ndarray:
    """Inverse of :func:`encode_array`, validating dtype, shape, size and finiteness."""
    if not isinstance(obj, dict) or set(obj) != {"dtype", "shape", "data"}:
        raise CertificateError(f"{field}: expected an object with dtype, shape, data")
    dtype, shape, data = obj["dtype"], obj["shape"], obj["data"]
    if dtype not in ALLOWED_DTYPES:
        raise CertificateError(f"{field}: dtype {dtype!r} not allowed")
    if (not isinstance(shape, list) or len(shape) > 8
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
        raise CertificateError(f"{field}: shape must be a list of non-negative integers")
    n = math.prod(shape)
    if n > max_elements:
        raise CertificateError(f"{field}: {n} elements exceeds the limit {max_elements}")
    if not isinstance(data, str):
        raise CertificateError(f"{field}: data must be a base64 string")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CertificateError(f"{field}: data is not valid base64") from exc
    dt = np.dtype(dtype)
    if len(raw) != n * dt.itemsize:
        raise CertificateError(f"{field}: {len(raw)} bytes do not match shape {shape} of {dtype}")
    arr = np.frombuffer(raw, dtype=dt).reshape(shape)
    if dt.kind == "f" and not np.all(np.isfinite(arr)):
        raise CertificateError(f"{field}: holds NaN or Inf")
    return arr.astype(dt.newbyteorder("="), copy=True)
