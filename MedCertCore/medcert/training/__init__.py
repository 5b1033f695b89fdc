"""Demo-model training on synthetic chest CT phantoms, and its evaluation (``medcert.training.evaluate``)."""

from medcert.training.config import (
    ADAPTER,
    ARCHITECTURE,
    HELD_OUT_SEED_START,
    MODEL_CONFIG,
    training_phantom_seed,
)

__all__ = ["ADAPTER", "ARCHITECTURE", "HELD_OUT_SEED_START", "MODEL_CONFIG", "training_phantom_seed"]
