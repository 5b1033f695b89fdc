"""Verification in a child process for the GUI (the replay loads torch; Slicer's process does not).

The GUI process prepares files (input, a sidecar holding the attached certificate, the stored mask exported
from the segmentation; or a DICOM SEG as carrier and stored mask, with its optional cross-check sidecar) and the
worker (``MedCertVerifyLib.worker``) verifies them; ``finish()`` brings the report into the scene exactly as
``VerifyLogic.verify`` does in-process.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from medcert.io import read_labelmap_nrrd, write_labelmap_nrrd
from medcert.sidecar import append_certificate
from MedCertSegmentLib.logic import label_names
from MedCertSegmentLib.node_volume import volume_for_node
from MedCertSegmentLib.process import MedCertProcess, segment_input

import MedCertVerifyLib
from MedCertVerifyLib.dicom_seg import is_dicom_seg_source
from MedCertVerifyLib.logic import VerifyLogic, VerifyResult, output_record_node, record_from
from MedCertVerifyLib.stored_mask import labels_on_grid
from MedCertVerifyLib.worker import report_from_json


def start_verify_process(logic: VerifyLogic, volume_node, certificate, *, trusted_keys: Sequence[str | Path],
                         weights_path: str | Path | None = None, segmentation_node=None,
                         trace_id: str | None = None, device: str = "cpu",
                         sidecar_path: str | Path | None = None) -> MedCertProcess:
    """Start verifying; ``finish()`` returns a ``VerifyResult`` with the nodes added to the scene.

    A DICOM SEG ``certificate`` goes to the worker as it is (carrier and stored mask), with ``sidecar_path``.
    """
    segmentation_node = output_record_node(certificate, segmentation_node)
    work = Path(tempfile.mkdtemp(prefix="medcert-verify-"))
    try:
        volume = volume_for_node(volume_node, logic.lookup)
        record = record_from(certificate, volume, trace_id, sidecar_path)
        path, series = segment_input(volume_node, logic.lookup, work)
        if is_dicom_seg_source(certificate):
            cert_file, cross = Path(certificate), str(sidecar_path) if sidecar_path else None
        else:
            cert_file, cross = append_certificate(work / "certificate.medcert.json", record), None
        mask = None
        if segmentation_node is not None:
            names = label_names(record)
            labels = labels_on_grid(logic.scene, segmentation_node, volume, names)
            mask = write_labelmap_nrrd(work / "stored-mask.seg.nrrd", labels, volume.ijk_to_ras,
                                       [(v, n, (0.5, 0.5, 0.5)) for v, n in sorted(names.items())])
        request = {"input": str(path), "series": series, "certificate": str(cert_file), "sidecar": cross,
                   "grid": volume.ijk_to_ras.tolist(), "trace_id": record.trace_id,
                   "mask": str(mask) if mask else None, "trust": [str(p) for p in trusted_keys],
                   "weights": str(weights_path) if weights_path else None, "device": device, "out": str(work)}
        request_path = work / "request.json"
        request_path.write_text(json.dumps(request), encoding="utf-8")

        def on_finish(summary: dict) -> VerifyResult:
            obj = json.loads(Path(summary["report"]).read_text(encoding="utf-8"))
            diff = read_labelmap_nrrd(summary["differences"])[0] if summary.get("differences") else None
            report = report_from_json(obj, diff)
            return logic.add_to_scene(volume_node, volume, report, record, segmentation_node)

        job = MedCertProcess([request_path], module="MedCertVerifyLib.worker",
                             paths=[Path(MedCertVerifyLib.__file__).resolve().parent.parent],
                             on_finish=on_finish, cleanup=work)
        return job.start()
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(work)
        raise
