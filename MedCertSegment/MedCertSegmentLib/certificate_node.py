"""A certificate attached to a MRML node as attributes; attributes survive ``.mrb`` save and reload byte for byte.

>>> attach_certificate(segmentation_node, record, sidecar_path)
>>> record = read_certificate(segmentation_node)     # a CertificateRecord again
"""

from __future__ import annotations

import json
from pathlib import Path

from medcert.errors import CertificateError
from medcert.sidecar import CertificateRecord, parse_json, record_to_json

from MedCertSegmentLib import attributes
from MedCertSegmentLib.attributes import has_certificate

CERTIFICATE_ATTRIBUTE = attributes.CERTIFICATE
TRACE_ID_ATTRIBUTE = attributes.TRACE_ID
SIDECAR_ATTRIBUTE = attributes.SIDECAR
KEY_ID_ATTRIBUTE = attributes.KEY_ID
MAX_ATTRIBUTE_BYTES = 64 * 1024 * 1024


def attach_certificate(node, record: CertificateRecord, sidecar: str | Path | None = None) -> None:
    """Store the record (core, evidence, annotations) as JSON, plus its trace id, key id and sidecar path."""
    text = json.dumps(record_to_json(record), ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    node.SetAttribute(CERTIFICATE_ATTRIBUTE, text)
    node.SetAttribute(TRACE_ID_ATTRIBUTE, record.trace_id)
    node.SetAttribute(KEY_ID_ATTRIBUTE, str(record.core.get("kid", "")))
    if sidecar is not None:
        node.SetAttribute(SIDECAR_ATTRIBUTE, str(sidecar))


def read_certificate(node) -> CertificateRecord:
    """The attached record; CertificateError when there is none or it is not a certificate record.

    Only the shape is checked here; the signature, schema and evidence binding are the verifier's checks.
    """
    name = node.GetName() if node is not None else "(none)"
    where = f"certificate attached to '{name}'"
    text = node.GetAttribute(CERTIFICATE_ATTRIBUTE) if node is not None else None
    if not text:
        raise CertificateError(f"node '{name}' carries no MedCert certificate ({CERTIFICATE_ATTRIBUTE})")
    data = text.encode("utf-8")
    if len(data) > MAX_ATTRIBUTE_BYTES:
        raise CertificateError(f"{where}: larger than {MAX_ATTRIBUTE_BYTES} bytes")
    obj = parse_json(data, where)
    if not isinstance(obj, dict) or not isinstance(obj.get("core"), dict) or not isinstance(obj.get("evidence"),
                                                                                            dict):
        raise CertificateError(f'{where}: expected an object with "core" and "evidence" objects')
    annotations = obj.get("annotations", {})
    if not isinstance(annotations, dict):
        raise CertificateError(f'{where}: field "annotations" must be an object')
    return CertificateRecord(core=obj["core"], evidence=obj["evidence"], annotations=annotations)


__all__ = ["attach_certificate", "has_certificate", "read_certificate", "sidecar_of"]


def sidecar_of(node) -> Path | None:
    value = node.GetAttribute(SIDECAR_ATTRIBUTE) if node is not None else None
    return Path(value) if value else None
