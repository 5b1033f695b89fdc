"""The source digest: what was segmented, independent of how it was stored.

SHA-256 over the canonical voxels ([i, j, k], Fortran order, little-endian, dtype from
``canonical_voxels``), the IJK→RAS matrix (rounded to 1e-6 mm) and the SOP Instance UIDs in slice order
(empty for NRRD/NIfTI). Transfer syntax, file names, file order and private tags do not enter it.
"""

from __future__ import annotations

from medcert.digests import grid_digest
from medcert.io.canonical_voxels import canonical_voxels
from medcert.volume import Volume

SOURCE_DIGEST_DOMAIN = "medcert/source/1"


def source_digest(volume: Volume) -> str:
    """43-character unpadded base64url SHA-256 of the volume's voxels, geometry and instance UIDs."""
    voxels = canonical_voxels(volume.voxels)
    return grid_digest(voxels, volume.ijk_to_ras, domain=SOURCE_DIGEST_DOMAIN,
                       header={"instances": list(volume.identity.instance_uids)})
