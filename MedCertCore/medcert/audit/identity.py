"""Who and where: operator name, host name and software versions recorded in each entry."""

from __future__ import annotations

import getpass
import importlib.metadata
import os
import platform
import socket
import sys
from functools import lru_cache

from medcert import __version__


def operator_name() -> str:
    """The configured operator: env ``MEDCERT_OPERATOR``, else the OS user name."""
    name = os.environ.get("MEDCERT_OPERATOR", "").strip()
    if name:
        return name
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):  # no passwd entry and no LOGNAME/USER/USERNAME
        getuid = getattr(os, "getuid", None)
        return f"uid:{getuid()}" if getuid else "unknown"


@lru_cache(maxsize=1)
def host_name() -> str:
    """This machine's host name."""
    return socket.gethostname() or "unknown"


def software_versions() -> dict[str, str]:
    """medcert, Python and (when installed) torch versions; never imports torch just to ask."""
    out = {"medcert": __version__, "python": platform.python_version()}
    torch = sys.modules.get("torch")
    version = getattr(torch, "__version__", None) if torch is not None else _installed("torch")
    if version:
        out["torch"] = str(version)
    return out


@lru_cache(maxsize=8)
def _installed(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
