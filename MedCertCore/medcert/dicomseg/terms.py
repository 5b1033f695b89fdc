"""Coded terms for DICOM SEG segments and the algorithm that made them.

Segments are coded as DICOM CID 7150 (category) / CID 7151 (type) SNOMED CT concepts, laterality as a
type modifier (SCT 24028007 Right, 7771000 Left), the way 3D Slicer's terminology and dcmqi code lungs.
The algorithm family is DCM 123110 "Artificial Intelligence" (CID 7162).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from medcert.errors import MedCertError

ALGORITHM_FAMILY = codes.DCM.ArtificialIntelligence  # DCM 123110, CID 7162


@dataclass(frozen=True)
class SegmentTerm:
    """Segmented property category and type, with an optional type modifier and anatomic region."""

    category: Code
    type: Code
    modifier: Code | None = None
    region: Code | None = None


TERMS: dict[str, SegmentTerm] = {
    "right lung": SegmentTerm(codes.SCT.AnatomicalStructure, codes.SCT.Lung, modifier=codes.SCT.Right),
    "left lung": SegmentTerm(codes.SCT.AnatomicalStructure, codes.SCT.Lung, modifier=codes.SCT.Left),
    "lung nodule": SegmentTerm(codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Nodule,
                               region=codes.SCT.Lung),
}


def term_for(label: str) -> SegmentTerm:
    """The coded term of a model's segment label; MedCertError when MedCert has none for it."""
    term = TERMS.get(label.strip().lower())
    if term is None:
        raise MedCertError(f"no DICOM SEG terminology for segment label {label!r}; "
                           f"known labels: {', '.join(sorted(TERMS))}")
    return term


def check_labels(labels: dict[int, str]) -> list[tuple[int, str, SegmentTerm]]:
    """``(segment number, label, term)`` for labels 1..n; refuses gaps and unknown labels."""
    numbers = sorted(labels)
    if numbers != list(range(1, len(numbers) + 1)):
        raise MedCertError(f"DICOM SEG needs label values 1..n without gaps; the model has {numbers}")
    return [(n, labels[n], term_for(labels[n])) for n in numbers]
