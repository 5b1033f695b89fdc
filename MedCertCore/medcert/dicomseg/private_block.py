"""The MedCert private block: the certificate carried inside a DICOM object.

Group 0x0009, Private Creator "MEDCERT 1" (normally at (0009,0010), reserving (0009,1000)-(0009,10FF)):

==========  ==  ==================================================================================
element     VR  value
==========  ==  ==================================================================================
(xx01)      LO  block format, ``medcert-dicomseg/1``
(xx02)      LO  trace id
(xx03)      LO  core digest: unpadded base64url SHA-256 of the signed core bytes
(xx10)      OB  signed core: RFC 8785 canonical JSON, UTF-8 (≤ 1 KiB)
(xx11)      LO  evidence encoding, ``zlib`` (RFC 1950 stream of the canonical evidence JSON)
(xx12)      IS  evidence length in bytes before compression
(xx13)      OB  evidence, compressed
(xx14)      OB  annotations (unsigned): RFC 8785 canonical JSON
==========  ==  ==================================================================================

OB values of odd length carry one trailing 0x00 (DICOM padding). The reader takes the raw bytes of every
element whatever its VR, so the block survives an Implicit VR re-encoding, where it reads back as UN.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from medcert.canonical import canonical_bytes
from medcert.certificate import MAX_CORE_BYTES, core_digest
from medcert.errors import CertificateError
from medcert.sidecar import MAX_SIDECAR_BYTES, CertificateRecord, parse_json

GROUP = 0x0009
CREATOR = "MEDCERT 1"
BLOCK_FORMAT = "medcert-dicomseg/1"
EVIDENCE_ENCODING = "zlib"
FORMAT, TRACE_ID, CORE_DIGEST = 0x01, 0x02, 0x03
CORE, EVIDENCE_ENCODING_EL, EVIDENCE_LENGTH, EVIDENCE, ANNOTATIONS = 0x10, 0x11, 0x12, 0x13, 0x14
ELEMENTS = (FORMAT, TRACE_ID, CORE_DIGEST, CORE, EVIDENCE_ENCODING_EL, EVIDENCE_LENGTH, EVIDENCE, ANNOTATIONS)
MAX_CORE_ELEMENT = 4 * MAX_CORE_BYTES


@dataclass
class CarriedCertificate:
    """What a private block holds. ``problems`` lists what could not be decoded (then the record holds
    ``None`` for an undecodable core and ``{}`` for undecodable evidence, so verification fails clearly)."""

    record: CertificateRecord
    format: str
    stated_trace_id: str | None
    stated_core_digest: str | None
    problems: list[str] = field(default_factory=list)


def has_certificate_block(ds: Dataset) -> bool:
    """True when ``ds`` holds a MedCert Private Creator in group 0x0009."""
    return _block_base(ds) is not None


def attach_certificate(ds: Dataset, record: CertificateRecord) -> None:
    """Add the certificate block to ``ds`` (refused when one is already there)."""
    if has_certificate_block(ds):
        raise CertificateError("the DICOM object already carries a MedCert private block")
    core = canonical_bytes(record.core)
    evidence = canonical_bytes(record.evidence)
    block = ds.private_block(GROUP, CREATOR, create=True)
    block.add_new(FORMAT, "LO", BLOCK_FORMAT)
    block.add_new(TRACE_ID, "LO", record.core["tid"])
    block.add_new(CORE_DIGEST, "LO", core_digest(record.core))
    block.add_new(CORE, "OB", core)
    block.add_new(EVIDENCE_ENCODING_EL, "LO", EVIDENCE_ENCODING)
    block.add_new(EVIDENCE_LENGTH, "IS", len(evidence))
    block.add_new(EVIDENCE, "OB", zlib.compress(evidence, 9))
    block.add_new(ANNOTATIONS, "OB", canonical_bytes(record.annotations))


def remove_certificate_block(ds: Dataset) -> bool:
    """Delete the MedCert creator and its block from ``ds`` (as de-identification would); True if found."""
    base = _block_base(ds)
    if base is None:
        return False
    block = range(base << 8, (base << 8) + 0x100)
    for tag in [e.tag for e in ds if e.tag.group == GROUP and e.tag.element in block]:
        del ds[tag]
    del ds[(GROUP << 16) | base]
    return True


def read_certificate(ds: Dataset, where: str) -> CarriedCertificate | None:
    """The certificate in ``ds``'s private block; None when there is no MedCert block at all."""
    base = _block_base(ds)
    if base is None:
        return None
    problems: list[str] = []
    raw = {e: _raw(ds, (GROUP << 16) | (base << 8) | e) for e in ELEMENTS}
    fmt = _text(raw[FORMAT]) or ""
    if fmt != BLOCK_FORMAT:
        raise CertificateError(f"{where}: MedCert private block format {fmt[:40]!r} is unknown; "
                               f"this MedCert reads {BLOCK_FORMAT!r}")
    core = _json(raw[CORE], MAX_CORE_ELEMENT, "signed core", where, problems)
    evidence = _evidence(raw, where, problems)
    annotations = _json(raw[ANNOTATIONS], MAX_CORE_ELEMENT * 16, "annotations", where, problems)
    record = CertificateRecord(core=core, evidence=evidence if isinstance(evidence, dict) else {},
                               annotations=annotations if isinstance(annotations, dict) else {})
    if evidence is not None and not isinstance(evidence, dict):
        problems.append(f"{where}: evidence in the private block is not a JSON object")
    return CarriedCertificate(record, fmt, _text(raw[TRACE_ID]), _text(raw[CORE_DIGEST]), problems)


def _block_base(ds: Dataset) -> int | None:
    for el in range(0x10, 0x100):
        tag = (GROUP << 16) | el
        if tag in ds and _text(_raw(ds, tag)) == CREATOR:
            return el
    return None


def _raw(ds: Dataset, tag: int) -> bytes | None:
    """The element's value as bytes, whatever VR it was read with (UN after Implicit VR)."""
    if tag not in ds:
        return None
    value: Any = ds[tag].value
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return str(value).encode("ascii")  # IS read back as a number


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.rstrip(b" \x00").decode("ascii").strip()
    except UnicodeDecodeError:
        return None


def _json(raw: bytes | None, limit: int, what: str, where: str, problems: list[str]) -> Any:
    if raw is None:
        problems.append(f"{where}: the private block has no {what}")
        return None
    if len(raw) > limit:
        problems.append(f"{where}: {what} in the private block is larger than {limit} bytes")
        return None
    try:
        return parse_json(raw.rstrip(b"\x00"), f"{where}: {what} in the private block")
    except CertificateError as exc:
        problems.append(str(exc))
        return None


def _evidence(raw: dict[int, bytes | None], where: str, problems: list[str]) -> Any:
    encoding = _text(raw[EVIDENCE_ENCODING_EL])
    if encoding != EVIDENCE_ENCODING:
        problems.append(f"{where}: evidence encoding {encoding!r} is not {EVIDENCE_ENCODING!r}")
        return None
    try:
        length = int(_text(raw[EVIDENCE_LENGTH]) or "")
    except ValueError:
        problems.append(f"{where}: evidence length in the private block is missing or not a number")
        return None
    if not 0 < length <= MAX_SIDECAR_BYTES or raw[EVIDENCE] is None:
        problems.append(f"{where}: evidence in the private block is missing or of impossible length")
        return None
    try:
        inflater = zlib.decompressobj()
        data = inflater.decompress(raw[EVIDENCE], length + 1)
    except zlib.error as exc:
        problems.append(f"{where}: evidence in the private block cannot be decompressed ({exc})")
        return None
    if len(data) != length or not inflater.eof or inflater.unused_data.strip(b"\x00"):
        problems.append(f"{where}: evidence in the private block is truncated or has trailing data")
        return None
    return _json(data, length, "evidence", where, problems)
