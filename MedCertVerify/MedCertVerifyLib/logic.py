"""Replay-verify a certificate found in the scene or in a sidecar; results as MRML nodes (no GUI needed).

>>> logic = VerifyLogic(scene)
>>> result = logic.verify(volume_node, segmentation_node, trusted_keys=["keys/"], weights_path=weights)
>>> result.report.verdict, result.checks_table, result.differences
>>> result = logic.verify(volume_node, "study/<trace_id>.seg.dcm", sidecar_path=sidecar, trusted_keys=["keys/"])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medcert.errors import CertificateError, MedCertError
from medcert.keys import load_trusted_keys
from medcert.pipeline import audit_verify, choose_record
from medcert.progress import ProgressFn, silent
from medcert.sidecar import CertificateRecord, read_sidecar
from medcert.verify import VerificationReport, verify_record
from medcert.volume import Volume
from MedCertSegmentLib import attributes
from MedCertSegmentLib.certificate_node import has_certificate, read_certificate
from MedCertSegmentLib.logic import label_names
from MedCertSegmentLib.mrml_outputs import place_beside
from MedCertSegmentLib.node_volume import InstanceLookup, volume_for_node

from MedCertVerifyLib import outputs
from MedCertVerifyLib.dicom_seg import is_dicom_seg_source, seg_record
from MedCertVerifyLib.stored_mask import stored_mask_from_segmentation

CertificateSource = Any  # a sidecar or DICOM SEG path (str | Path), or a node carrying an attached certificate


@dataclass
class VerifyResult:
    """The report and the nodes that show it."""

    report: VerificationReport
    record: CertificateRecord
    checks_table: Any
    deviation_chart: Any = None
    differences: Any = None  # vtkMRMLSegmentationNode with a "differences" segment, when the replay ran

    @property
    def verdict(self) -> str:
        return self.report.verdict


def record_from(source: CertificateSource, volume: Volume, trace_id: str | None = None,
                sidecar: str | Path | None = None) -> CertificateRecord:
    """The certificate to verify: attached to a node, carried by a DICOM SEG (``sidecar`` cross-checks it), or
    chosen from a sidecar (trace id, else by input)."""
    if is_dicom_seg_source(source):
        return seg_record(source, volume, sidecar, trace_id)
    if sidecar is not None:
        raise MedCertError("a cross-check sidecar only applies when the certificate is a DICOM SEG")
    if isinstance(source, str | Path):
        return choose_record(read_sidecar(source), volume, trace_id)
    record = read_certificate(source)
    if trace_id and record.trace_id != trace_id:
        raise CertificateError(f"node '{source.GetName()}' carries certificate {record.trace_id}, not {trace_id}")
    return record


def output_record_node(certificate: CertificateSource, segmentation_node=None):
    """The segmentation to check as the output record: the given one, else the certificate's own node.

    A DICOM SEG is its own output record: MedCertError when a segmentation node is given with it.
    """
    if is_dicom_seg_source(certificate):
        if segmentation_node is not None:
            raise MedCertError("a DICOM SEG is itself the output record; give no segmentation node with it")
        return None
    if segmentation_node is not None or isinstance(certificate, str | Path):
        return segmentation_node
    return certificate if certificate.IsA("vtkMRMLSegmentationNode") else None


class VerifyLogic:
    """Verification of certificates against volume nodes in ``scene``."""

    def __init__(self, scene, lookup: InstanceLookup | None = None) -> None:
        self.scene = scene
        self.lookup = lookup

    def verify(self, volume_node, certificate: CertificateSource, *, trusted_keys: Sequence[str | Path],
               weights_path: str | Path | None = None, segmentation_node=None, trace_id: str | None = None,
               device: str = "cpu", threads: int | None = None, audit_db: str | Path | None = None,
               sidecar_path: str | Path | None = None, progress: ProgressFn = silent) -> VerifyResult:
        """Verify and add the result nodes. Without ``weights_path`` the replay is skipped (INCONCLUSIVE at best).

        The output record is ``segmentation_node``, else the certificate's own node when it is a segmentation.
        A DICOM SEG ``certificate`` is carrier and output record at once (``medcert.pipeline.verify_files``);
        ``sidecar_path`` then cross-checks it (the ``carrier`` check).
        """
        segmentation_node = output_record_node(certificate, segmentation_node)
        if is_dicom_seg_source(certificate):
            return self._verify_seg(volume_node, Path(certificate), trusted_keys=trusted_keys,
                                    weights_path=weights_path, sidecar_path=sidecar_path, trace_id=trace_id,
                                    device=device, threads=threads, audit_db=audit_db, progress=progress)
        trusted = load_trusted_keys(trusted_keys)
        progress("loading input", 0.0)
        volume = volume_for_node(volume_node, self.lookup)
        record = record_from(certificate, volume, trace_id, sidecar_path)
        mask = None
        if segmentation_node is not None:
            mask = stored_mask_from_segmentation(self.scene, segmentation_node, volume, label_names(record))
        report = verify_record(volume, record, trusted=trusted, weights_path=weights_path, stored_mask=mask,
                               device=device, threads=threads, progress=progress)
        audit_verify(report, record, volume, audit_db)  # the audit entry ``medcert verify`` writes
        return self.add_to_scene(volume_node, volume, report, record, segmentation_node)

    def _verify_seg(self, volume_node, seg_path: Path, *, trusted_keys: Sequence[str | Path],
                    weights_path: str | Path | None, sidecar_path: str | Path | None, trace_id: str | None,
                    device: str, threads: int | None, audit_db: str | Path | None,
                    progress: ProgressFn) -> VerifyResult:
        from medcert.pipeline import verify_files

        progress("loading input", 0.0)
        volume = volume_for_node(volume_node, self.lookup)
        record = record_from(seg_path, volume, trace_id, sidecar_path)
        report = verify_files(volume_node.GetName(), seg_path, trust=list(trusted_keys), weights_path=weights_path,
                              trace_id=trace_id, device=device, threads=threads, audit_db=audit_db, volume=volume,
                              sidecar_path=sidecar_path, progress=progress)
        return self.add_to_scene(volume_node, volume, report, record)

    def add_to_scene(self, volume_node, volume: Volume, report: VerificationReport, record: CertificateRecord,
                     segmentation_node=None) -> VerifyResult:
        base = (segmentation_node or volume_node).GetName() or "volume"
        title = f"{base} MedCert verification {report.verdict}"
        table = outputs.checks_table(self.scene, report, title)
        chart = outputs.deviation_chart(self.scene, report, f"{base} MedCert replay deviation")
        diff = outputs.differences_segmentation(self.scene, volume_node, report.differences, volume.ijk_to_ras,
                                                f"{base} MedCert differences")
        for node in (table, chart):
            if node is not None:
                place_beside(self.scene, node, volume_node)
        if segmentation_node is not None and has_certificate(segmentation_node):
            segmentation_node.SetAttribute(attributes.LAST_VERDICT, report.verdict)
        return VerifyResult(report, record, table, chart, diff)
