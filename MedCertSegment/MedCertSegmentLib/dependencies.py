"""Python packages MedCert needs inside Slicer: checked without importing, installed after confirmation.

torch is installed through the PyTorch extension (``PyTorchUtils``), everything else from the module's
``Resources/requirements.txt`` with ``slicer.packaging.pip_ensure`` (Slicer ≥ 5.12), else
``slicer.util.pip_install`` after a confirmation dialog.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

# distribution name -> import name, where they differ
IMPORT_NAMES = {"pynrrd": "nrrd", "pyyaml": "yaml"}
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def requirement_names(path: str | Path) -> list[str]:
    """Distribution names in a requirements file (comments, options and version specifiers dropped)."""
    names = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        m = _NAME.match(line) if line and not line.startswith("-") else None
        if m:
            names.append(m.group(1))
    return names


def is_importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_packages(path: str | Path) -> list[str]:
    """Requirements whose module cannot be imported."""
    return [n for n in requirement_names(path) if not is_importable(IMPORT_NAMES.get(n.lower(), n.replace("-", "_")))]


def ensure_dependencies(requirements: str | Path, requester: str, ask: bool = True) -> bool:
    """Install what is missing (asking the user first unless ``ask`` is False, as in self-tests).

    True when torch and every requirement are importable afterwards.
    """
    import slicer

    if not is_importable("torch"):
        try:
            import PyTorchUtils
        except ImportError:
            slicer.util.errorDisplay(f"{requester} needs PyTorch: install the 'PyTorch' extension and restart Slicer.")
            return False
        if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=ask) is None:
            return False
    missing = missing_packages(requirements)
    if missing:
        packaging = getattr(slicer, "packaging", None)
        if ask and packaging is not None and hasattr(packaging, "pip_ensure"):
            packaging.pip_ensure(packaging.load_requirements(str(requirements)), requester=requester)
        elif not ask or slicer.util.confirmOkCancelDisplay(
                f"{requester} needs these Python packages: {', '.join(missing)}. Install them now?",
                windowTitle=requester):
            slicer.util.pip_install(["-r", str(requirements)])
        else:
            return False
    importlib.invalidate_caches()
    return not missing_packages(requirements) and is_importable("torch")
