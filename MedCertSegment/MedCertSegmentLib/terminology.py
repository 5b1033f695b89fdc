"""Standard terminology (SNOMED CT) for the labels MedCert's models emit, in Slicer's segment tag format.

The tag string is produced by ``vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry`` so it always
has the format of the running Slicer (5.11: ``context~SCT^code^meaning~…~regionContext~…~…``).
"""

from __future__ import annotations

from dataclasses import dataclass

import slicer

GENERAL_ANATOMY = "Segmentation category and type - 3D Slicer General Anatomy list"
DICOM_MASTER = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


@dataclass(frozen=True)
class Code:
    """A coded concept: coding scheme designator, code value, code meaning."""

    scheme: str
    value: str
    meaning: str


NONE = Code("", "", "")
ANATOMICAL_STRUCTURE = Code("SCT", "123037004", "Anatomical Structure")
ALTERED_STRUCTURE = Code("SCT", "49755003", "Morphologically Altered Structure")
LUNG = Code("SCT", "39607008", "Lung")
RIGHT = Code("SCT", "24028007", "Right")
LEFT = Code("SCT", "7771000", "Left")
NODULE = Code("SCT", "27925004", "Nodule")


@dataclass(frozen=True)
class SegmentTerm:
    """Category / type / modifier in a terminology context, optionally with an anatomic region."""

    context: str
    category: Code
    type: Code
    modifier: Code = NONE
    region: Code = NONE
    region_modifier: Code = NONE
    region_context: str = ANATOMIC_CONTEXT

    def serialized(self) -> str:
        """The segment's ``TerminologyEntry`` tag value."""
        parts = [self.context]
        for code in (self.category, self.type, self.modifier):
            parts += [code.value, code.scheme, code.meaning]
        parts.append(self.region_context)
        for code in (self.region, self.region_modifier):
            parts += [code.value, code.scheme, code.meaning]
        return slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(*parts)


STANDARD_TERMS: dict[str, SegmentTerm] = {
    "right lung": SegmentTerm(GENERAL_ANATOMY, ANATOMICAL_STRUCTURE, LUNG, RIGHT),
    "left lung": SegmentTerm(GENERAL_ANATOMY, ANATOMICAL_STRUCTURE, LUNG, LEFT),
    "lung nodule": SegmentTerm(DICOM_MASTER, ALTERED_STRUCTURE, NODULE, region=LUNG),
}

# Display colors (RGB 0..1), the same as the labelmaps the CLI writes; distinct for the two lungs.
COLORS: dict[str, tuple[float, float, float]] = {
    "right lung": (0.85, 0.45, 0.40),
    "left lung": (0.40, 0.60, 0.85),
    "lung nodule": (0.95, 0.85, 0.20),
}
FALLBACK_COLOR = (0.7, 0.7, 0.7)


def term_for(label_name: str) -> SegmentTerm | None:
    """The standard term of a label name (case-insensitive), or None for a label MedCert does not code."""
    return STANDARD_TERMS.get(label_name.strip().lower())


def color_for(label_name: str) -> tuple[float, float, float]:
    return COLORS.get(label_name.strip().lower(), FALLBACK_COLOR)
