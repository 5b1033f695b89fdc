"""File-level workflows shared by the CLI and the Slicer modules: segment + certify, and verify."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcert import audit, dicomseg
from medcert.certificate import UnknownSchemaError, core_digest
from medcert.certify import Certified, certify
from medcert.dicomseg import carrier
from medcert.digests import b64u_sha256
from medcert.errors import InputError, MedCertError
from medcert.findings import findings_for_run
from medcert.io import load_volume, read_labelmap_nrrd, write_labelmap_nrrd, write_scalar_nrrd
from medcert.keys import load_private_key, load_trusted_keys
from medcert.progress import ProgressFn, silent
from medcert.sidecar import (
    CertificateRecord,
    append_certificate,
    find_certificate,
    read_sidecar,
    sidecar_name,
)
from medcert.source_digest import source_digest
from medcert.verify import CheckResult, StoredMask, VerificationReport, verify_record
from medcert.verify.report import all_skipped
from medcert.volume import Volume
from medcert.weights import ModelWeights, default_weights_path, load_weights

SEGMENT_COLORS = {1: (0.85, 0.45, 0.40), 2: (0.40, 0.60, 0.85), 3: (0.95, 0.85, 0.20)}


@dataclass
class SegmentOutcome:
    """What ``segment`` produced."""

    certified: Certified
    volume: Volume
    weights: ModelWeights
    sidecar: Path
    labelmap: Path
    anomaly: Path | None
    audit_entry: Any = None
    files: list[Path] = field(default_factory=list)
    dicom_seg: Path | None = None
    explanation: Path | None = None

    @property
    def trace_id(self) -> str:
        return self.certified.record.core["tid"]


def resolve_weights(path: str | Path | None) -> Path:
    """The given weights file, else the bundled demo model."""
    if path:
        return Path(path)
    bundled = default_weights_path()
    if bundled is None:
        raise MedCertError("no --weights given and the bundled demo model is missing (Resources/Models/)")
    return bundled


def segment_to_files(input_path: str | Path, key_path: str | Path, out_dir: str | Path, *,
                     weights_path: str | Path | None = None, series_uid: str | None = None,
                     sidecar_dir: str | Path | None = None, device: str = "cpu", threads: int | None = None,
                     audit_db: str | Path | None = None, volume: Volume | None = None,
                     dicom_seg: bool = False, progress: ProgressFn = silent) -> SegmentOutcome:
    """Load, segment, certify; write labelmap, anomaly map and sidecar; record the action in the audit log.

    With ``dicom_seg`` (DICOM series input only) also write ``<trace_id>.seg.dcm``: a DICOM SEG carrying the
    same certificate in its private block. Nothing is overwritten: outputs are named by trace id and the
    sidecar is appended to. If the audit log refuses the entry, the new output files are removed and the
    error propagates.
    """
    if dicom_seg and volume is None and not Path(input_path).is_dir():
        raise InputError(f"--dicom-seg needs a DICOM series folder as input, not {input_path}")
    key = load_private_key(key_path)
    weights = load_weights(resolve_weights(weights_path))
    audit.preflight(audit_db)  # a regulated site's "refuse" policy fails here, before any inference
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MedCertError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    progress("loading input", 0.0)
    vol = volume if volume is not None else load_volume(input_path, series_uid=series_uid)
    if dicom_seg:
        _check_dicom_seg_input(vol, weights, input_path)
    cert = certify(vol, weights, key, device=device, threads=threads, findings_fn=findings_for_run,
                   progress=progress)
    record, run, adapter = cert.record, cert.run, cert.adapter
    tid = record.core["tid"]
    segments = [(v, name, SEGMENT_COLORS.get(v, (0.7, 0.7, 0.7)))
                for v, name in sorted(adapter.labels.items())]
    seg_ds = (dicomseg.certified_segmentation(vol, record, run.outputs.labels, adapter.labels,
                                              colors=SEGMENT_COLORS) if dicom_seg else None)
    seg_path = None
    written: list[Path] = []
    try:
        lab = write_labelmap_nrrd(out / f"{tid}.seg.nrrd", run.outputs.labels, vol.ijk_to_ras, segments)
        written.append(lab)
        anom = None
        if run.outputs.anomaly is not None:
            anom = write_scalar_nrrd(out / f"{tid}.anomaly.nrrd", run.outputs.anomaly, vol.ijk_to_ras)
            written.append(anom)
        expl = None
        if run.outputs.explanation is not None:
            expl = write_scalar_nrrd(out / f"{tid}.explanation.nrrd", run.outputs.explanation, vol.ijk_to_ras)
            written.append(expl)
        entry = audit.record("certify", outcome="issued", trace_id=tid, study_uid=vol.identity.study_uid,
                             digests={"core": core_digest(record.core), **record.core["d"]},
                             details={"model": weights.name, "version": weights.version,
                                      "key_id": record.core["kid"]}, db=audit_db)
        if entry is not None:
            record = CertificateRecord(record.core, record.evidence,
                                       {"audit_anchor": entry.entry_hash, "audit_seq": entry.seq})
            cert.record = record
        if seg_ds is not None:
            dicomseg.remove_certificate_block(seg_ds)
            dicomseg.attach_certificate(seg_ds, record)  # with the audit annotations, as in the sidecar
            seg_path = dicomseg.write_dicom(out / f"{tid}.seg.dcm", seg_ds)
            written.append(seg_path)
            audit.record("export", outcome="written", trace_id=tid, study_uid=vol.identity.study_uid,
                         digests={"core": core_digest(record.core),
                                  "file": b64u_sha256(seg_path.read_bytes())},
                         details={"format": "DICOM SEG", "file": seg_path.name}, db=audit_db)
        side_dir = Path(sidecar_dir) if sidecar_dir else out
        name = sidecar_name(vol.identity.study_uid, vol.identity.source_name)
        sidecar = append_certificate(side_dir / name, record)
    except BaseException:
        for p in written:
            with contextlib.suppress(OSError):
                p.unlink()
        raise
    return SegmentOutcome(cert, vol, weights, sidecar, lab, anom, entry, [*written, sidecar], seg_path, expl)


def _check_dicom_seg_input(vol: Volume, weights: ModelWeights, input_path: str | Path) -> None:
    """Refuse ``dicom_seg`` before any work when the input is no DICOM series or a label has no code."""
    if vol.identity.source_format != "dicom" or not vol.identity.source_files:
        raise InputError(f"--dicom-seg needs a DICOM series as input; {input_path} is "
                         f"{vol.identity.source_format}")
    labels = weights.adapter.get("labels") if isinstance(weights.adapter, dict) else None
    try:
        dicomseg.check_labels({int(k): str(v) for k, v in (labels or {}).items()})
    except (TypeError, ValueError) as exc:
        raise MedCertError(f"{weights.path}: adapter labels are malformed for a DICOM SEG: {exc}") from None


def choose_record(records: list[CertificateRecord], volume: Volume,
                  trace_id: str | None) -> CertificateRecord:
    """By trace id; else the only record; else the one whose source digest matches the input."""
    if trace_id or len(records) == 1:
        return find_certificate(records, trace_id)
    src = source_digest(volume)
    matching = [r for r in records if isinstance(r.core.get("d"), dict) and r.core["d"].get("src") == src]
    if len(matching) >= 1:
        return matching[-1]
    return find_certificate(records, None)


def _core_digest_or_none(core: Any) -> dict[str, str] | None:
    try:
        return {"core": core_digest(core)}
    except (MedCertError, TypeError, ValueError):
        return None


def load_mask(path: str | Path, volume: Volume | None = None) -> StoredMask:
    """A stored labelmap: ``.seg.nrrd``, or a DICOM SEG (decoded onto ``volume``'s grid)."""
    if volume is not None and dicomseg.is_dicom_file(path):
        return dicomseg.seg_stored_mask(dicomseg.read_seg(path), volume)
    labels, m = read_labelmap_nrrd(path)
    return StoredMask(labels=labels, ijk_to_ras=m, origin=str(path))


def _seg_mask(seg: dicomseg.SegFile, vol: Volume) -> tuple[StoredMask | None, CheckResult | None]:
    """The SEG's mask on the series grid, or the ``output_record`` failure saying why it cannot be placed."""
    try:
        return dicomseg.seg_stored_mask(seg, vol), None
    except dicomseg.SegGridError as exc:
        return None, CheckResult("fail", "output.seg.grid", str(exc), {"source": dicomseg.reader.ORIGIN})


def verify_files(input_path: str | Path, cert_path: str | Path, *, trust: list[str | Path],
                 weights_path: str | Path | None = None, mask_path: str | Path | None = None,
                 trace_id: str | None = None, series_uid: str | None = None, device: str = "cpu",
                 threads: int | None = None, audit_db: str | Path | None = None, volume: Volume | None = None,
                 sidecar_path: str | Path | None = None, progress: ProgressFn = silent) -> VerificationReport:
    """Verify a study against its certificate; record the verdict in the audit log.

    ``cert_path`` is a sidecar or a DICOM SEG (told apart by content). A SEG is both the certificate carrier
    (private block) and the stored mask; ``sidecar_path`` cross-checks it, or supplies the certificate
    when the SEG's private block was removed (see ``medcert.dicomseg.carrier``).
    """
    trusted = load_trusted_keys(trust)
    if dicomseg.is_dicom_file(cert_path):
        return _verify_seg(input_path, cert_path, trusted=trusted, weights_path=weights_path,
                           mask_path=mask_path, trace_id=trace_id, series_uid=series_uid, device=device,
                           threads=threads, audit_db=audit_db, volume=volume, sidecar_path=sidecar_path,
                           progress=progress)
    if sidecar_path is not None:
        raise MedCertError("--sidecar only applies when --cert is a DICOM SEG")
    try:
        records = read_sidecar(cert_path)
    except UnknownSchemaError as exc:
        report = VerificationReport(all_skipped(str(exc), "algorithm.unsupported"),
                                    note="certificate schema is not supported by this MedCert version")
        audit.record("verify", outcome=report.verdict, details={"reason": str(exc)[:200]}, db=audit_db)
        return report
    progress("loading input", 0.0)
    vol = volume if volume is not None else load_volume(input_path, series_uid=series_uid)
    record = choose_record(records, vol, trace_id)
    mask, grid_error = None, None
    if mask_path and dicomseg.is_dicom_file(mask_path):
        mask, grid_error = _seg_mask(dicomseg.read_seg(mask_path), vol)
    elif mask_path:
        mask = load_mask(mask_path)
    report = verify_record(vol, record, trusted=trusted, weights_path=weights_path, stored_mask=mask,
                           device=device, threads=threads, progress=progress)
    if grid_error is not None:
        report.checks["output_record"] = grid_error
    audit_verify(report, record, vol, audit_db)
    return report


def _verify_seg(input_path: str | Path, seg_path: str | Path, *, trusted: Any,
                weights_path: str | Path | None, mask_path: str | Path | None, trace_id: str | None,
                series_uid: str | None, device: str, threads: int | None, audit_db: str | Path | None,
                volume: Volume | None, sidecar_path: str | Path | None,
                progress: ProgressFn) -> VerificationReport:
    """Verify with a DICOM SEG as certificate carrier and stored mask."""
    if mask_path is not None:
        raise MedCertError("--mask cannot be combined with a DICOM SEG as --cert: the SEG is the stored mask")
    seg = dicomseg.read_seg(seg_path)
    records = read_sidecar(sidecar_path) if sidecar_path is not None else None
    progress("loading input", 0.0)
    vol = volume if volume is not None else load_volume(input_path, series_uid=series_uid)
    choice = carrier.choose(seg, records, trace_id, lambda recs, tid: choose_record(recs, vol, tid))
    mask, grid_error = _seg_mask(seg, vol)
    report = verify_record(vol, choice.record, trusted=trusted, weights_path=weights_path, stored_mask=mask,
                           device=device, threads=threads, progress=progress)
    if grid_error is not None:
        report.checks["output_record"] = grid_error
    report.checks[carrier.CARRIER] = choice.check
    report.note = "; ".join(n for n in (report.note, *choice.notes) if n)
    audit_verify(report, choice.record, vol, audit_db)
    return report


def audit_verify(report: VerificationReport, record: CertificateRecord, vol: Volume,
                  audit_db: str | Path | None) -> None:
    audit.record("verify", outcome=report.verdict, trace_id=report.trace_id, study_uid=vol.identity.study_uid,
                 digests=_core_digest_or_none(record.core),
                 details={n: c.status for n, c in report.checks.items()}, db=audit_db)
