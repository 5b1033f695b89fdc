"""Network architectures that MedCert can rebuild from a weights file's metadata."""

from medcert.models.registry import build_model, known_architectures, register_architecture

__all__ = ["build_model", "known_architectures", "register_architecture"]
