"""The signed certificate core: build, sign (Ed25519 over DSSE PAE), validate, verify the signature.

The core is a small JSON object (≤ 1024 bytes signed) that binds digests of everything a replay needs;
the bulky evidence lives beside it in the sidecar and is bound through ``d.evd``. Layout and rules:
docs/certificate-format.md.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Literal

import jsonschema
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from medcert.canonical import canonical_bytes
from medcert.digests import b64u, b64u_decode, b64u_sha256
from medcert.errors import CertificateError
from medcert.keys import key_id
from medcert.uids import is_valid_uid

CORE_VERSION = "medcert/1"
PAYLOAD_TYPE = "application/vnd.medcert.core+json"
MAX_CORE_BYTES = 1024
DIGEST_NAMES = ("src", "inp", "pre", "wts", "trj", "msk", "lgt", "anm", "exp", "evd")
OPTIONAL_DIGESTS = ("anm", "exp")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

_DIGEST = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")
_SIG = re.compile(r"[A-Za-z0-9_-]{85}[AQgw]")
_TOL = re.compile(r"[A-Za-z0-9._/-]{1,64}")
_LABEL = re.compile(r"[!-\[\]-~]([ -\[\]-~]{0,62}[!-\[\]-~])?")
_PLACEHOLDER = {"kid": "A" * 43, "sig": "A" * 86}


class UnknownSchemaError(CertificateError):
    """A certificate or sidecar of a schema version this MedCert does not know (newer or foreign)."""


@dataclass(frozen=True)
class SignatureResult:
    """Outcome of a signature check: ``valid``, ``invalid`` or ``untrusted`` (key not in the trust set)."""

    status: Literal["valid", "invalid", "untrusted"]
    key_id: str | None
    reason: str


def new_trace_id() -> str:
    """A fresh trace id: random UUID version 4, canonical lowercase."""
    return str(uuid.uuid4())


def utc_now() -> str:
    """Current UTC time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.now(UTC).strftime(TIME_FORMAT)


def build_core(*, trace_id: str, issued: str, study_uid: str | None, series_uid: str | None,
               digests: dict[str, str], model_name: str, model_version: str, tolerance_id: str) -> dict:
    """The unsigned core (no ``kid``/``sig``), validated; sign it with :func:`sign_core`."""
    if not isinstance(digests, dict):
        raise CertificateError("certificate core: digests must be a mapping of digest name to value")
    unknown = sorted(set(digests) - set(DIGEST_NAMES), key=str)
    if unknown:
        raise CertificateError(f"certificate core: unknown digest name {unknown[0]!r}; "
                               f"expected one of {', '.join(DIGEST_NAMES)}")
    core = {
        "v": CORE_VERSION,
        "tid": trace_id,
        "iat": issued,
        "study": study_uid,
        "series": series_uid,
        "d": {name: digests[name] for name in DIGEST_NAMES if name in digests},
        "mdl": {"n": model_name, "v": model_version},
        "tol": tolerance_id,
    }
    _validate(core, signed=False)
    return core


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE pre-authentication encoding: ``DSSEv1 LEN(type) type LEN(body) body`` (decimal lengths)."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


def signing_payload(core: Mapping[str, Any]) -> bytes:
    """The exact bytes the signature covers: PAE over the canonical core without ``sig`` (with ``kid``)."""
    body = canonical_bytes({k: v for k, v in core.items() if k != "sig"})
    return pae(PAYLOAD_TYPE, body)


def sign_core(core: dict, private_key: Ed25519PrivateKey) -> dict:
    """A new dict: ``core`` with ``kid`` of ``private_key`` and its Ed25519 ``sig`` (any old sig dropped)."""
    if not isinstance(core, dict):
        raise CertificateError("certificate core must be a JSON object")
    unsigned = {k: v for k, v in core.items() if k not in ("kid", "sig")}
    unsigned["kid"] = key_id(private_key.public_key())
    _validate(unsigned, signed=False)
    signed = {**unsigned, "sig": b64u(private_key.sign(signing_payload(unsigned)))}
    return validate_core(signed)


def core_bytes(core: dict) -> bytes:
    """RFC 8785 bytes of the signed core (the serialized certificate core). Validate it first."""
    if not isinstance(core, dict):
        raise CertificateError("certificate core must be a JSON object")
    return canonical_bytes(core)


def core_digest(core: dict) -> str:
    """SHA-256 of :func:`core_bytes`, unpadded base64url; the audit log and DICOM SEG name a core by it."""
    return b64u_sha256(core_bytes(core))


def evidence_digest(evidence: dict) -> str:
    """SHA-256 of the RFC 8785 bytes of the evidence object, unpadded base64url (the value of ``d.evd``)."""
    if not isinstance(evidence, dict):
        raise CertificateError("evidence must be a JSON object")
    return b64u_sha256(canonical_bytes(evidence))


def validate_core(core: object, *, signed: bool = True) -> dict:
    """Check ``core`` against core.schema.json and the rules JSON Schema cannot state; return it.

    Raises UnknownSchemaError for another ``v``, CertificateError naming the field for anything else.
    With ``signed=False`` the ``kid`` and ``sig`` fields may be absent (a core about to be signed).
    """
    return _validate(core, signed=signed)


def verify_signature(core: dict, trusted: Mapping[str, Ed25519PublicKey]) -> SignatureResult:
    """Check the Ed25519 signature of ``core`` against the trust set; never raises for a bad signature.

    ``untrusted``: the signature is well formed but its key is not in ``trusted``, so it cannot be checked.
    ``invalid``: malformed ``kid``/``sig``, or the trusted key does not verify the signature.
    """
    if not isinstance(core, dict):
        return SignatureResult("invalid", None, "certificate core is not a JSON object")
    kid, sig = core.get("kid"), core.get("sig")
    if not isinstance(kid, str) or not _DIGEST.fullmatch(kid):
        return SignatureResult("invalid", None, "key id (kid) is missing or malformed")
    if not isinstance(sig, str) or not _SIG.fullmatch(sig):
        return SignatureResult("invalid", kid, "signature (sig) is missing or malformed")
    public = next((k for k in trusted.values() if key_id(k) == kid), None)
    if public is None:
        return SignatureResult("untrusted", kid,
                               f"signing key {kid} is not in the trust set; the signature cannot be checked")
    try:
        public.verify(b64u_decode(sig), signing_payload(core))
    except (InvalidSignature, ValueError, CertificateError):
        return SignatureResult("invalid", kid, "signature does not match the certificate core "
                               "(content altered after signing, or signed by another key)")
    return SignatureResult("valid", kid, "signature verified with a trusted key")


# --- validation -------------------------------------------------------------------------------------------


@functools.cache
def load_schema(name: str) -> dict:
    """A JSON Schema shipped in ``medcert/schema/`` (e.g. ``"core.schema.json"``)."""
    return json.loads(resources.files("medcert").joinpath("schema", name).read_text("utf-8"))


@functools.cache
def _core_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema("core.schema.json"))


def _validate(core: object, *, signed: bool) -> dict:
    where = "certificate core"
    if not isinstance(core, dict):
        raise CertificateError(f"{where} must be a JSON object")
    check_version(core.get("v", CORE_VERSION), CORE_VERSION, f'{where}: field "v"', "certificate schema")
    inst = core if signed else {**_PLACEHOLDER, **{k: v for k, v in core.items() if k != "sig"}}
    errors = list(_core_validator().iter_errors(inst))
    if errors:
        raise CertificateError(describe_schema_error(errors, where))
    _check_semantics(inst, where)
    size = len(canonical_bytes(inst))
    if size > MAX_CORE_BYTES:
        raise CertificateError(f"{where} is {size} bytes signed, over the {MAX_CORE_BYTES}-byte limit; "
                               "shorten the model name, model version or tolerance id")
    return core


def check_version(value: object, expected: str, field: str, what: str) -> None:
    """UnknownSchemaError when a version string is not ``expected``; CertificateError when not a string."""
    if not isinstance(value, str):
        raise CertificateError(f"{field} must be a string")
    if value != expected:
        raise UnknownSchemaError(f"{what} {_short(repr(value), 60)} is newer or unknown; "
                                 f"this MedCert reads {expected!r}")


def _check_semantics(core: dict, where: str) -> None:
    """What the schema's ``^…$`` patterns cannot pin down (a trailing newline) and real calendar dates."""
    for field in ("study", "series"):
        if core[field] is not None and not is_valid_uid(core[field]):
            raise CertificateError(f'{where}: field "{field}" is not a valid DICOM UID')
    if not _TOL.fullmatch(core["tol"]):
        raise CertificateError(f'{where}: field "tol" is malformed (1-64 of A-Z a-z 0-9 . _ / -)')
    for sub in ("n", "v"):
        if not _LABEL.fullmatch(core["mdl"][sub]):
            raise CertificateError(f'{where}: field "mdl.{sub}" is malformed '
                                   "(1-64 printable ASCII characters, no backslash)")
    try:
        datetime.strptime(core["iat"], TIME_FORMAT)
    except ValueError:
        raise CertificateError(f'{where}: field "iat" is not a real time (YYYY-MM-DDTHH:MM:SSZ)') from None


_TYPE_WORDS = {"object": "an object", "array": "an array", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}


def _json_path(parts: object) -> str:
    out = ""
    for p in parts:  # type: ignore[attr-defined]
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def describe_schema_error(errors: list[jsonschema.ValidationError], where: str) -> str:
    """One line naming the field of the shallowest schema violation among ``errors``."""
    err = min(errors, key=lambda e: (len(e.absolute_path), _json_path(e.absolute_path), e.validator))
    path = _json_path(err.absolute_path)

    def name(child: str) -> str:
        return f"{path}.{child}" if path else child

    v, inst = err.validator, err.instance
    if v == "required":
        missing = [k for k in err.validator_value if isinstance(inst, dict) and k not in inst]
        return f'{where}: missing field "{name(missing[0] if missing else "?")}"'
    if v == "additionalProperties" and isinstance(inst, dict):
        extra = sorted(k for k in inst if k not in err.schema.get("properties", {}))
        return f'{where}: unexpected field "{name(_short(extra[0]) if extra else "?")}"'
    if "propertyNames" in err.schema_path and v == "enum":  # ``inst`` is the refused key
        return (f'{where}: unexpected field "{name(_short(inst))}" '
                f"(allowed: {', '.join(err.validator_value)})")
    if v == "type":
        want = err.validator_value if isinstance(err.validator_value, str) else err.validator_value[0]
        return f'{where}: field "{path}" must be {_TYPE_WORDS.get(want, want)}'
    if v == "const":
        return f'{where}: field "{path}" must be {err.validator_value!r}'
    if v == "minItems":
        return f'{where}: field "{path}" must not be empty'
    desc = err.schema.get("description")
    if v == "oneOf":
        return f'{where}: field "{path}" must be ' + (desc or "of another form")
    if v in ("pattern", "minLength", "maxLength") and isinstance(inst, str):
        return f'{where}: field "{path}" is malformed' + (f" (expected {desc})" if desc else "")
    if v in ("minimum", "maximum"):
        return f'{where}: field "{path}" is out of range'
    return f'{where}: field "{path}": {_short(err.message, 120)}'


def _short(text: object, limit: int = 40) -> str:
    s = str(text).replace("\n", " ").replace("\r", " ")
    return s if len(s) <= limit else s[:limit] + "…"
