"""The one in-memory volume type shared by loaders, inference and verification."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class StudyIdentity:
    """Who/what the voxels are, without patient identity in clear.

    ``patient_pseudonym`` is a keyed hash (see ``medcert.io.pseudonym``), never a name or an ID.
    ``instance_uids`` lists SOP Instance UIDs in slice order (empty for NRRD/NIfTI input).
    """

    source_format: str  # "dicom" | "nrrd" | "nifti"
    source_name: str  # file or folder stem, used for sidecar naming when there is no Study UID
    study_uid: str | None = None
    series_uid: str | None = None
    instance_uids: tuple[str, ...] = ()
    frame_of_reference_uid: str | None = None
    modality: str | None = None
    acquisition_datetime: str | None = None  # ISO 8601 as far as the source gives it
    device: str | None = None  # manufacturer and model
    source_system: str | None = None  # station / institution / AE title
    patient_pseudonym: str | None = None
    source_files: tuple[str, ...] = field(default=(), compare=False)  # paths, slice order; not certified


@dataclass(frozen=True)
class Volume:
    """Voxels indexed ``[i, j, k]`` (i = column, j = row, k = slice) and the exact IJK→RAS matrix.

    ``voxels`` holds decoded values (after rescale slope/intercept): int16/int32 when every value is an
    integer in range, else float32 (see ``medcert.io.canonical_voxels``). ``ijk_to_ras`` is a float64
    4×4 matrix mapping voxel index (i, j, k, 1) to RAS millimetres.
    """

    voxels: np.ndarray
    ijk_to_ras: np.ndarray
    identity: StudyIdentity

    def __post_init__(self) -> None:
        if self.voxels.ndim != 3:
            raise ValueError(f"volume must be 3-D, got shape {self.voxels.shape}")
        m = np.asarray(self.ijk_to_ras, dtype=np.float64)
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise ValueError("ijk_to_ras must be a finite 4x4 matrix")
        object.__setattr__(self, "ijk_to_ras", m)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.voxels.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k (column norms of the direction×spacing block)."""
        return tuple(float(np.linalg.norm(self.ijk_to_ras[:3, c])) for c in range(3))  # type: ignore[return-value]

    def with_voxels(self, voxels: np.ndarray) -> Volume:
        """Same geometry and identity, other voxels (e.g. a labelmap on this grid)."""
        return Volume(voxels=voxels, ijk_to_ras=self.ijk_to_ras, identity=self.identity)
