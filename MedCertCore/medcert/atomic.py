"""Atomic file writes: temp file in the same folder, fsync, rename, fsync the folder."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from medcert.errors import MedCertError


def atomic_write_bytes(path: str | Path, data: bytes, *, overwrite: bool = False, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part.

    With ``overwrite=False`` an existing file is never replaced (MedCertError). ``mode`` is applied before
    the data is written, so a private key is never readable by others, even briefly.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise MedCertError(f"output folder does not exist: {folder}")
    if path.exists() and not overwrite:
        raise MedCertError(f"refusing to overwrite existing file: {path}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            # link() fails if the target appeared meanwhile: no silent overwrite in a race.
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise MedCertError(f"refusing to overwrite existing file: {path}") from None
            os.unlink(tmp)
        _fsync_dir(folder)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise MedCertError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
