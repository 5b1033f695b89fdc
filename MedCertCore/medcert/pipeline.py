"""File-level workflows shared by the CLI and the Slicer modules: segment + certify, and verify."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcert import audit
from medcert.certificate import core_digest
from medcert.certify import Certified, certify
from medcert.errors import MedCertError
from medcert.findings import findings_for_run
from medcert.io import load_volume, read_labelmap_nrrd, write_labelmap_nrrd, write_scalar_nrrd
from medcert.keys import load_private_key, load_trusted_keys
from medcert.progress import ProgressFn, silent
from medcert.sidecar import CertificateRecord, append_certificate, find_certificate, read_sidecar, sidecar_name
from medcert.source_digest import source_digest
from medcert.verify import StoredMask, VerificationReport, verify_record
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
                     progress: ProgressFn = silent) -> SegmentOutcome:
    """Load, segment, certify; write labelmap, anomaly map and sidecar; record the action in the audit log.

    Nothing is overwritten: outputs are named by trace id and the sidecar is appended to. If the audit log
    refuses the entry, the new output files are removed and the error propagates.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = load_private_key(key_path)
    weights = load_weights(resolve_weights(weights_path))
    progress("loading input", 0.0)
    vol = volume if volume is not None else load_volume(input_path, series_uid=series_uid)
    cert = certify(vol, weights, key, device=device, threads=threads, findings_fn=findings_for_run,
                   progress=progress)
    record, run, adapter = cert.record, cert.run, cert.adapter
    tid = record.core["tid"]
    segments = [(v, name, SEGMENT_COLORS.get(v, (0.7, 0.7, 0.7))) for v, name in sorted(adapter.labels.items())]
    written: list[Path] = []
    try:
        lab = write_labelmap_nrrd(out / f"{tid}.seg.nrrd", run.outputs.labels, vol.ijk_to_ras, segments)
        written.append(lab)
        anom = None
        if run.outputs.anomaly is not None:
            anom = write_scalar_nrrd(out / f"{tid}.anomaly.nrrd", run.outputs.anomaly, vol.ijk_to_ras)
            written.append(anom)
        entry = audit.record("certify", outcome="issued", trace_id=tid, study_uid=vol.identity.study_uid,
                             digests={"core": core_digest(record.core), **record.core["d"]},
                             details={"model": weights.name, "version": weights.version,
                                      "key_id": record.core["kid"]}, db=audit_db)
        if entry is not None:
            record = CertificateRecord(record.core, record.evidence,
                                       {"audit_anchor": entry.entry_hash, "audit_seq": entry.seq})
            cert.record = record
        side_dir = Path(sidecar_dir) if sidecar_dir else out
        sidecar = append_certificate(side_dir / sidecar_name(vol.identity.study_uid, vol.identity.source_name),
                                     record)
    except BaseException:
        for p in written:
            with contextlib.suppress(OSError):
                p.unlink()
        raise
    return SegmentOutcome(cert, vol, weights, sidecar, lab, anom, entry, written + [sidecar])


def choose_record(records: list[CertificateRecord], volume: Volume, trace_id: str | None) -> CertificateRecord:
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


def load_mask(path: str | Path) -> StoredMask:
    labels, m = read_labelmap_nrrd(path)
    return StoredMask(labels=labels, ijk_to_ras=m, origin=str(path))


def verify_files(input_path: str | Path, cert_path: str | Path, *, trust: list[str | Path],
                 weights_path: str | Path | None = None, mask_path: str | Path | None = None,
                 trace_id: str | None = None, series_uid: str | None = None, device: str = "cpu",
                 threads: int | None = None, audit_db: str | Path | None = None, volume: Volume | None = None,
                 progress: ProgressFn = silent) -> VerificationReport:
    """Verify a study against a sidecar; record the verdict in the audit log."""
    trusted = load_trusted_keys(trust)
    records = read_sidecar(cert_path)
    progress("loading input", 0.0)
    vol = volume if volume is not None else load_volume(input_path, series_uid=series_uid)
    record = choose_record(records, vol, trace_id)
    mask = load_mask(mask_path) if mask_path else None
    report = verify_record(vol, record, trusted=trusted, weights_path=weights_path, stored_mask=mask,
                           device=device, threads=threads, progress=progress)
    audit.record("verify", outcome=report.verdict, trace_id=report.trace_id, study_uid=vol.identity.study_uid,
                 digests=_core_digest_or_none(record.core),
                 details={n: c.status for n, c in report.checks.items()}, db=audit_db)
    return report
