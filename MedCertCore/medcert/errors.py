"""Error types. A MedCertError is a user-facing problem: the CLI prints its message as one line."""


class MedCertError(Exception):
    """A problem the user can fix (bad input, missing file, refused format)."""


class InputError(MedCertError):
    """An input volume or study cannot be loaded as asked."""


class CertificateError(MedCertError):
    """A certificate or sidecar is malformed, oversize or of an unknown schema."""


class KeyFileError(MedCertError):
    """A signing or trust key cannot be used."""


class WeightsError(MedCertError):
    """A weights file is refused (not safetensors, unknown architecture, bad metadata)."""


class AuditError(MedCertError):
    """The audit log cannot be written or read."""
