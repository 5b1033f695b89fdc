"""The sidecar ``<StudyInstanceUID>.medcert.json``: an append-only list of certificates for one study.

Reading checks the size before parsing, the nesting depth, duplicate keys, the JSON Schema
(schema/sidecar.schema.json with schema/core.schema.json) and the core rules; every refusal is one line.
Appending holds an exclusive lock beside the sidecar and rewrites it atomically, keeping every earlier record.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource

from medcert.atomic import atomic_write_bytes
from medcert.certificate import (
    CORE_VERSION,
    check_version,
    describe_schema_error,
    evidence_digest,
    load_schema,
    validate_core,
)
from medcert.errors import CertificateError, MedCertError
from medcert.fileio import read_limited
from medcert.uids import require_uid, safe_stem

SIDECAR_FORMAT = "medcert-sidecar/1"
SIDECAR_SUFFIX = ".medcert.json"
MAX_SIDECAR_BYTES = 64 * 1024 * 1024
MAX_JSON_DEPTH = 32
_LISTED_IDS = 10

_STRING = re.compile(r'"[^"\\]*(?:\\[\s\S][^"\\]*)*"')
_BRACKET = re.compile(r"[\[\]{}]")


@dataclass(frozen=True)
class CertificateRecord:
    """One certificate: the signed core, its evidence (bound by ``d.evd``) and unsigned annotations."""

    core: dict
    evidence: dict
    annotations: dict = field(default_factory=dict)

    @property
    def trace_id(self) -> str:
        return self.core["tid"]


def sidecar_name(study_uid: str | None, fallback_stem: str) -> str:
    """``<StudyInstanceUID>.medcert.json`` (UID validated), or a sanitized stem when there is no Study UID."""
    if study_uid is not None:
        return require_uid(study_uid, "StudyInstanceUID") + SIDECAR_SUFFIX
    return safe_stem(fallback_stem) + SIDECAR_SUFFIX


def record_to_json(record: CertificateRecord) -> dict:
    """The JSON object stored in the sidecar's ``certificates`` list."""
    return {"core": record.core, "evidence": record.evidence, "annotations": record.annotations}


def read_sidecar(path: str | Path) -> list[CertificateRecord]:
    """Every certificate in a sidecar, validated; CertificateError (UnknownSchemaError) on any problem."""
    path = Path(path)
    where = f"sidecar {path}"
    doc = parse_json(read_limited(path, MAX_SIDECAR_BYTES, what="sidecar file", error=CertificateError), where)
    return _records(doc, where)


def append_certificate(path: str | Path, record: CertificateRecord) -> Path:
    """Add ``record`` to the sidecar at ``path`` (created if absent); earlier records are kept as they are.

    Refuses an invalid record, evidence that does not match ``d.evd``, a trace id already present and a
    sidecar that does not validate. Two writers never lose a record: the read-append-write cycle runs under
    an exclusive ``fcntl`` lock on ``.<name>.lock`` beside the sidecar, and the write is atomic.
    """
    path = Path(path)
    _check_new_record(record)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise MedCertError(f"output folder does not exist: {folder}")
    with _exclusive_lock(folder / f".{path.name}.lock"):
        exists = path.exists()
        records = read_sidecar(path) if exists else []
        if any(r.trace_id == record.trace_id for r in records):
            raise CertificateError(f"sidecar {path} already holds a certificate with trace id "
                                   f"{record.trace_id}")
        doc = {"format": SIDECAR_FORMAT, "certificates": [record_to_json(r) for r in [*records, record]]}
        data = (json.dumps(doc, indent=2, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")
        if len(data) > MAX_SIDECAR_BYTES:
            raise CertificateError(f"sidecar {path} would exceed {MAX_SIDECAR_BYTES} bytes; "
                                   "start a new sidecar")
        atomic_write_bytes(path, data, overwrite=exists)
    return path


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold ``flock(LOCK_EX)`` on ``lock_path``; the file is removed on release, so none is left behind.

    A waiter may lock a file that the previous holder just removed; it then sees that the path no longer
    names its file and tries again, so exactly one process holds the lock on the current file.
    """
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise MedCertError(f"cannot create lock file {lock_path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held, now = os.fstat(fd), os.stat(lock_path)
            if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
                break
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        os.close(fd)  # releases the lock


def find_certificate(records: Sequence[CertificateRecord], trace_id: str | None = None) -> CertificateRecord:
    """The only certificate, or the one with ``trace_id``; else CertificateError listing the trace ids."""
    if trace_id is not None:
        for r in records:
            if r.trace_id == trace_id:
                return r
        raise CertificateError(f"no certificate with trace id {trace_id}; present: {_list_ids(records)}")
    if len(records) == 1:
        return records[0]
    if not records:
        raise CertificateError("the sidecar holds no certificate")
    raise CertificateError(f"the sidecar holds {len(records)} certificates; choose one by trace id: "
                           f"{_list_ids(records)}")


# --- parsing ----------------------------------------------------------------------------------------------


def parse_json(data: bytes, where: str) -> Any:
    """Strict JSON: UTF-8, depth ≤ MAX_JSON_DEPTH (checked before parsing), no duplicate keys, no NaN/Inf."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CertificateError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise CertificateError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels")

    def pairs(items: list[tuple[str, Any]]) -> dict:
        obj: dict = {}
        for k, v in items:
            if k in obj:
                raise CertificateError(f"{where}: duplicate key {_short(k)!r} in one JSON object")
            obj[k] = v
        return obj

    def constant(name: str) -> Any:
        raise CertificateError(f"{where}: {name} is not allowed in JSON")

    def number(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise CertificateError(f"{where}: number {_short(text)} is out of range")
        return value

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant, parse_float=number)
    except json.JSONDecodeError as exc:
        raise CertificateError(f"{where}: not valid JSON: {exc.msg} at line {exc.lineno} "
                               f"column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:
        raise CertificateError(f"{where}: not valid JSON: {_short(exc, 80)}") from None


def json_depth(text: str) -> int:
    """Deepest nesting of arrays/objects in JSON text (strings skipped), computed without parsing."""
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub("", text)):
        if m.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                break
        else:
            depth -= 1
    return deepest


# --- validation -------------------------------------------------------------------------------------------


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    core = load_schema("core.schema.json")
    registry = Registry().with_resource(core["$id"], Resource.from_contents(core))
    return jsonschema.Draft202012Validator(load_schema("sidecar.schema.json"), registry=registry)


def _records(doc: Any, where: str) -> list[CertificateRecord]:
    """Validate a parsed sidecar document and return its records."""
    if not isinstance(doc, dict):
        raise CertificateError(f"{where}: must be a JSON object")
    check_version(doc.get("format", SIDECAR_FORMAT), SIDECAR_FORMAT, f'{where}: field "format"',
                  f"{where}: format")
    certs = doc.get("certificates")
    for i, rec in enumerate(certs if isinstance(certs, list) else []):
        core = rec.get("core") if isinstance(rec, dict) else None
        if isinstance(core, dict) and "v" in core:
            check_version(core["v"], CORE_VERSION, f'{where}: field "certificates[{i}].core.v"',
                          f"{where}: certificates[{i}]: certificate schema")
    errors = list(_validator().iter_errors(doc))
    if errors:
        raise CertificateError(describe_schema_error(errors, where))
    records, seen = [], set()
    for i, rec in enumerate(certs):
        here = f"{where}: certificates[{i}]"
        try:
            validate_core(rec["core"])
            evidence_digest(rec["evidence"])
        except CertificateError as exc:
            raise type(exc)(f"{here}: {exc}") from None
        annotations = rec.get("annotations", {})
        if "audit_seq" in annotations and type(annotations["audit_seq"]) is not int:
            raise CertificateError(f'{here}: field "annotations.audit_seq" must be an integer')
        tid = rec["core"]["tid"]
        if tid in seen:
            raise CertificateError(f"{here}: trace id {tid} appears twice")
        seen.add(tid)
        records.append(CertificateRecord(core=rec["core"], evidence=rec["evidence"], annotations=annotations))
    return records


def _check_new_record(record: CertificateRecord) -> None:
    where = "new certificate"
    if not isinstance(record, CertificateRecord):
        raise CertificateError(f"{where}: expected a CertificateRecord")
    doc = {"format": SIDECAR_FORMAT, "certificates": [record_to_json(record)]}
    if _object_depth(doc) > MAX_JSON_DEPTH:
        raise CertificateError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    _records(doc, where)
    if evidence_digest(record.evidence) != record.core["d"]["evd"]:
        raise CertificateError(f'{where}: evidence does not match its digest "d.evd"')


def _object_depth(obj: Any) -> int:
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                break
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def _list_ids(records: Sequence[CertificateRecord]) -> str:
    ids = [r.trace_id for r in records[:_LISTED_IDS]]
    more = len(records) - len(ids)
    return ", ".join(ids) + (f" and {more} more" if more > 0 else "") if ids else "none"


def _short(text: object, limit: int = 40) -> str:
    s = str(text).replace("\n", " ")
    return s if len(s) <= limit else s[:limit] + "…"
