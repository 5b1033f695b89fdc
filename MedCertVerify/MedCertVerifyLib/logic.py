"""Replay-verify a certificate found in the scene or in a sidecar; results as MRML nodes (no GUI needed).

>>> logic = VerifyLogic(scene)
>>> result = logic.verify(volume_node, segmentation_node, trusted_keys=["keys/"], weights_path=weights)
>>> result.report.verdict, result.checks_table, result.differences
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medcert.errors import CertificateError
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
from MedCertVerifyLib.stored_mask import stored_mask_from_segmentation

CertificateSource = Any  # a sidecar path (str | Path) or a node carrying an attached certificate


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


def record_from(source: CertificateSource, volume: Volume, trace_id: str | None = None) -> CertificateRecord:
    """The certificate to verify: attached to a node, or chosen from a sidecar (trace id, else by input)."""
    if isinstance(source, str | Path):
        return choose_record(read_sidecar(source), volume, trace_id)
    record = read_certificate(source)
    if trace_id and record.trace_id != trace_id:
        raise CertificateError(f"node '{source.GetName()}' carries certificate {record.trace_id}, not {trace_id}")
    return record


def output_record_node(certificate: CertificateSource, segmentation_node=None):
    """The segmentation to check as the output record: the given one, else the certificate's own node."""
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
               progress: ProgressFn = silent) -> VerifyResult:
        """Verify and add the result nodes. Without ``weights_path`` the replay is skipped (INCONCLUSIVE at best).

        The output record is ``segmentation_node``, else the certificate's own node when it is a segmentation.
        """
        trusted = load_trusted_keys(trusted_keys)
        progress("loading input", 0.0)
        volume = volume_for_node(volume_node, self.lookup)
        record = record_from(certificate, volume, trace_id)
        segmentation_node = output_record_node(certificate, segmentation_node)
        mask = None
        if segmentation_node is not None:
            mask = stored_mask_from_segmentation(self.scene, segmentation_node, volume, label_names(record))
        report = verify_record(volume, record, trusted=trusted, weights_path=weights_path, stored_mask=mask,
                               device=device, threads=threads, progress=progress)
        audit_verify(report, record, volume, audit_db)  # the audit entry ``medcert verify`` writes
        return self.add_to_scene(volume_node, volume, report, record, segmentation_node)

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
