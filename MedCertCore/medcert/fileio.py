"""Reading a whole file with a size limit and one-line errors (keys, weights, sidecars)."""

from __future__ import annotations

import os
from pathlib import Path

from medcert.errors import MedCertError


def read_limited(path: str | Path, limit: int, *, what: str, error: type[MedCertError] = MedCertError) -> bytes:
    """All bytes of ``path``; refuses files over ``limit`` bytes (checked on the open file and while reading)."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            if os.fstat(fh.fileno()).st_size > limit:
                raise error(f"{what} {path} is larger than {limit} bytes")
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a folder, not a file") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise error(f"{what} {path} is larger than {limit} bytes")
    return data
