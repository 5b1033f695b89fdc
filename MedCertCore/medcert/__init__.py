"""MedCert: signed, replay-verifiable certificates for AI segmentation of medical volumes."""

__version__ = "0.1.0"
