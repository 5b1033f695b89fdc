"""A DICOM SEG as the certificate carrier of a verification, cross-checked against a sidecar.

The extra ``carrier`` check says where the verified certificate came from and whether SEG and sidecar agree:

=========================  =======  ===================================================================
code                       status   meaning
=========================  =======  ===================================================================
carrier.seg                skipped  certificate from the SEG private block; no sidecar to compare
carrier.agree              pass     SEG private block and sidecar hold the same core (same digest)
carrier.disagree           fail     same trace id, different core; or the SEG contradicts itself
carrier.sidecar_missing    fail     the sidecar holds no certificate with the SEG's trace id
carrier.absent             skipped  no private block (e.g. removed by de-identification): sidecar used
=========================  =======  ===================================================================

A ``fail`` makes the verdict FAIL; the report's ``note`` says the same in words.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from medcert.certificate import core_digest
from medcert.dicomseg.reader import SegFile
from medcert.errors import CertificateError, MedCertError
from medcert.sidecar import CertificateRecord
from medcert.verify.report import CheckResult

CARRIER = "carrier"
Chooser = Callable[[list[CertificateRecord], str | None], CertificateRecord]


@dataclass
class CarrierChoice:
    """The record to verify, the carrier check and notes for the report."""

    record: CertificateRecord
    check: CheckResult
    notes: list[str]


def _digest(core: Any) -> str | None:
    try:
        return core_digest(core)
    except (MedCertError, TypeError, ValueError):
        return None


def _tid(core: Any) -> str | None:
    tid = core.get("tid") if isinstance(core, dict) else None
    return tid if isinstance(tid, str) else None


def choose(seg: SegFile, sidecar: list[CertificateRecord] | None, trace_id: str | None,
           choose_record: Chooser) -> CarrierChoice:
    """Pick the certificate to verify from the SEG (or, without a private block, from the sidecar)."""
    params = seg.algorithm_parameters
    cert = seg.certificate
    if cert is None:
        return _from_sidecar(seg, sidecar, trace_id or params.get("medcert_trace_id"), params, choose_record)
    record, notes = cert.record, list(cert.problems)
    seg_tid = _tid(record.core) or cert.stated_trace_id
    if trace_id is not None and seg_tid is not None and trace_id != seg_tid:
        raise CertificateError(f"DICOM SEG {seg.path} carries certificate {seg_tid}, not {trace_id}")
    digest = _digest(record.core)
    if digest is not None and cert.stated_core_digest not in (None, digest):
        notes.append("the private block's core digest element does not match its core (edited?)")
    named = params.get("medcert_core_sha256")
    if digest is not None and named not in (None, digest):
        notes.append(f"the SEG's Algorithm Parameters name core {named}, its private block holds {digest}")
        return CarrierChoice(record, CheckResult("fail", "carrier.disagree", notes[-1]), notes)
    if sidecar is None:
        return CarrierChoice(record, CheckResult("skipped", "carrier.seg", "certificate from the SEG private "
                                                 "block; no sidecar given to compare"), notes)
    match = [r for r in sidecar if r.trace_id == seg_tid]
    if not match:
        notes.append(f"the sidecar holds no certificate with the SEG's trace id {seg_tid}")
        return CarrierChoice(record, CheckResult("fail", "carrier.sidecar_missing", notes[-1]), notes)
    side = core_digest(match[0].core)
    if side != digest:
        notes.append(f"SEG and sidecar disagree on certificate {seg_tid}: core digest "
                     f"{digest or 'unreadable'} in the SEG, {side} in the sidecar")
        return CarrierChoice(record, CheckResult("fail", "carrier.disagree", notes[-1],
                                                 {"seg_core": digest, "sidecar_core": side}), notes)
    agree = f"SEG private block and sidecar hold the same certificate (core {digest})"
    return CarrierChoice(record, CheckResult("pass", "carrier.agree", agree, {"core": digest}), notes)


def _from_sidecar(seg: SegFile, sidecar: list[CertificateRecord] | None, trace_id: str | None,
                  params: dict[str, str], choose_record: Chooser) -> CarrierChoice:
    if sidecar is None:
        raise CertificateError(f"DICOM SEG {seg.path} carries no MedCert certificate (private block absent, "
                               "e.g. removed by de-identification); give the sidecar with --sidecar")
    record = choose_record(sidecar, trace_id)
    notes = [f"the DICOM SEG carries no MedCert private block (removed, e.g. by de-identification); "
             f"certificate {record.trace_id} taken from the sidecar"]
    named, digest = params.get("medcert_core_sha256"), core_digest(record.core)
    if named not in (None, digest):
        notes.append(f"the SEG's Algorithm Parameters name core {named}, the sidecar's certificate "
                     f"is {digest}")
        return CarrierChoice(record, CheckResult("fail", "carrier.disagree", notes[-1]), notes)
    return CarrierChoice(record, CheckResult("skipped", "carrier.absent", notes[0]), notes)
