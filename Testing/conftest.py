"""Shared fixtures. Every test runs with its own MedCert home and audit log (never the user's)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # test helpers such as dicom_factory


@pytest.fixture(autouse=True)
def _isolated_medcert_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("medcert-home")
    monkeypatch.setenv("MEDCERT_HOME", str(home))
    monkeypatch.setenv("MEDCERT_AUDIT_DB", str(home / "audit.sqlite"))
    monkeypatch.setenv("MEDCERT_OPERATOR", "test-operator")
    monkeypatch.delenv("MEDCERT_DEFAULT_WEIGHTS", raising=False)
    return home


@pytest.fixture(scope="session")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from medcert.keys import generate_keypair

    return generate_keypair(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def other_keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from medcert.keys import generate_keypair

    return generate_keypair(tmp_path_factory.mktemp("other-keys"))


@pytest.fixture(scope="session")
def placeholder_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeded untrained U-Net: fast and deterministic, enough to exercise every mechanism."""
    from medcert.models.placeholder import write_placeholder_weights

    return write_placeholder_weights(tmp_path_factory.mktemp("weights") / "placeholder.safetensors")


def synthetic_ct(shape: tuple[int, int, int] = (64, 56, 24), spacing: tuple[float, float, float] = (2.5, 2.5, 4.0),
                 seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A small chest-like CT in HU and its IJK→RAS matrix (see ``medcert.phantom.toy``)."""
    from medcert.phantom.toy import toy_chest_ct

    return toy_chest_ct(shape, spacing, seed)


@pytest.fixture(scope="session")
def small_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small NRRD study on disk."""
    from medcert.io import write_scalar_nrrd

    vox, m = synthetic_ct()
    return write_scalar_nrrd(tmp_path_factory.mktemp("study") / "small-chest.nrrd", vox, m)


def run_cli(*args: str | os.PathLike, env: dict[str, str] | None = None,
            timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """Run the real ``medcert`` CLI in a subprocess (its own process environment)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "medcert.cli.main", *map(str, args)], capture_output=True,
                          text=True, env=full_env, timeout=timeout, check=False)
