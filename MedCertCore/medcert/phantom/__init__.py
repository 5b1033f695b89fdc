"""Synthetic chest CT phantoms (Hounsfield units) with right/left lung and nodule labels.

>>> from medcert.phantom import generate_chest_ct
>>> ph = generate_chest_ct(7)            # ph.volume (int16 HU), ph.labels (uint8), ph.nodules
"""

from medcert.phantom.generator import generate_chest_ct
from medcert.phantom.params import OVERRIDES
from medcert.phantom.types import (
           LABEL_NAMES,
           LEFT_LUNG,
           NODULE,
           NODULE_KINDS,
           RIGHT_LUNG,
           NoduleSpec,
           Phantom,
)

__all__ = ["LABEL_NAMES", "LEFT_LUNG", "NODULE", "NODULE_KINDS", "OVERRIDES", "RIGHT_LUNG", "NoduleSpec", "Phantom",
           "generate_chest_ct"]
