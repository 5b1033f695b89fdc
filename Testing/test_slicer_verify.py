"""MedCertVerify's logic on a real headless MRML scene: certify, save as .mrb, reload into a fresh scene,
verify (PASS); edit one voxel (output_record FAIL, the differences segment holds that voxel); signature and
output record only (INCONCLUSIVE); sidecar certificates; the child-process path the GUI uses."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import slicer
import vtk
from medcert.verify import CHECKS
from slicer_scene import HeadlessSlicer

pytestmark = pytest.mark.slicer
REPLAY_CHECKS = ("signature", "evidence", "input_hash", "weights_hash", "trajectory", "final_logits",
                 "output_record")


@pytest.fixture(scope="module")
def certified_mrb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, str]:
    """A scene with a certified segmentation, saved as .mrb: (mrb path, self-test files, trace id)."""
    from MedCertSegmentLib.selftest import run_segment_scenario

    tmp = tmp_path_factory.mktemp("certified")
    app = HeadlessSlicer(tmp / "cache")
    try:
        _volume, result, files = run_segment_scenario(app.scene, tmp / "work")
        mrb = app.save_mrb(tmp / "certified.mrb")
    finally:
        app.close()
    return mrb, files, result.trace_id


@pytest.fixture
def reloaded(certified_mrb, tmp_path):
    """A fresh scene read from the .mrb: (app, volume node, segmentation node)."""
    mrb, _files, trace_id = certified_mrb
    app = HeadlessSlicer(tmp_path / "cache")
    app.load_mrb(mrb)
    segs = [app.scene.GetNthNodeByClass(n, "vtkMRMLSegmentationNode")
            for n in range(app.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))]
    seg = next(s for s in segs if s.GetAttribute("MedCert.traceId") == trace_id)
    volume = app.scene.GetNodeByID(seg.GetNodeReferenceID(seg.GetReferenceImageGeometryReferenceRole()))
    yield app, volume, seg
    app.close()


def verify(app, volume, certificate, files, **kw):
    from MedCertVerifyLib.logic import VerifyLogic

    kw.setdefault("trusted_keys", [files.public_key])
    kw.setdefault("audit_db", files.work / "audit.sqlite")
    return VerifyLogic(app.scene).verify(volume, certificate, **kw)


def table_rows(table) -> list[list[str]]:
    columns = range(table.GetNumberOfColumns())
    return [[table.GetCellText(r, c) for c in columns] for r in range(table.GetNumberOfRows())]


def differences_voxels(app, result, volume) -> list[tuple[int, int, int]]:
    """The differences segment exported by Slicer onto the volume grid."""
    seg = result.differences
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(seg.GetSegmentation().GetSegmentIdBySegmentName("differences"))
    lm = app.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(seg, ids, lm, volume)
    arr = np.transpose(slicer.util.arrayFromVolume(lm), (2, 1, 0))
    return [tuple(int(v) for v in p) for p in np.argwhere(arr != 0)]


def test_certificate_survives_mrb_and_verifies_pass(certified_mrb, reloaded):
    from medcert.sidecar import find_certificate, read_sidecar, record_to_json
    from MedCertSegmentLib.certificate_node import read_certificate

    _mrb, files, trace_id = certified_mrb
    app, volume, seg = reloaded
    record = read_certificate(seg)
    sidecar = Path(seg.GetAttribute("MedCert.sidecar"))
    assert record_to_json(record) == record_to_json(find_certificate(read_sidecar(sidecar), trace_id))
    result = verify(app, volume, seg, files, weights_path=files.weights)
    assert result.verdict == "PASS", result.report.render()
    rows = table_rows(result.checks_table)
    assert [r[0] for r in rows] == [n for n in CHECKS if n in result.report.checks]
    assert set(REPLAY_CHECKS) <= {r[0] for r in rows}
    assert {r[1] for r in rows} == {"PASS"}
    assert result.checks_table.GetAttribute("MedCert.verdict") == "PASS"
    assert json.loads(rows[CHECKS.index("trajectory")][4])["tolerance"] > 0
    # per-layer deviation chart: two series (deviation, tolerance) over one row per traced layer
    chart = result.deviation_chart
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    series = chart.GetNthPlotSeriesNode(0)
    data = series.GetTableNode().GetTable()
    assert data.GetNumberOfRows() == len(result.report.layer_deviations) > 0
    assert [series.GetYColumnName(), chart.GetNthPlotSeriesNode(1).GetYColumnName()] == ["Deviation", "Tolerance"]
    assert differences_voxels(app, result, volume) == []
    assert result.differences.GetAttribute("MedCert.differingVoxels") == "0"
    assert seg.GetAttribute("MedCert.lastVerdict") == "PASS"


def test_one_flipped_voxel_fails_output_record_and_shows_that_voxel(certified_mrb, reloaded):
    from MedCertSegmentLib.node_volume import volume_from_node
    from MedCertVerifyLib.selftest import remove_voxel, voxel_to_remove

    _mrb, files, _trace = certified_mrb
    app, volume, seg = reloaded
    name, voxel = voxel_to_remove(seg, volume)
    remove_voxel(seg, name, voxel, volume_from_node(volume).ijk_to_ras)
    result = verify(app, volume, seg, files, weights_path=files.weights)
    checks = result.report.checks
    assert result.verdict == "FAIL"
    assert checks["output_record"].status == "fail" and checks["output_record"].code == "output.mask.mismatch"
    assert all(c.status == "pass" for n, c in checks.items() if n != "output_record"), result.report.render()
    assert checks["output_record"].figures["voxels_differing_from_replay"] == 1
    assert differences_voxels(app, result, volume) == [voxel]
    assert result.differences.GetAttribute("MedCert.differingVoxels") == "1"


def test_signature_and_output_record_only_is_inconclusive(certified_mrb, reloaded):
    _mrb, files, _trace = certified_mrb
    app, volume, seg = reloaded
    result = verify(app, volume, seg, files)  # no weights
    checks = result.report.checks
    assert result.verdict == "INCONCLUSIVE", result.report.render()
    assert checks["signature"].status == "pass" and checks["output_record"].status == "pass"
    assert checks["weights_hash"].status == "skipped" and checks["trajectory"].status == "skipped"
    assert result.deviation_chart is None and result.differences is None


def test_untrusted_signer_fails_signature(certified_mrb, reloaded, other_keypair):
    _mrb, files, _trace = certified_mrb
    app, volume, seg = reloaded
    result = verify(app, volume, seg, files, trusted_keys=[other_keypair[1]])
    assert result.verdict == "FAIL"
    assert result.report.checks["signature"].code == "signingCredential.untrusted"


def test_edited_attached_evidence_fails_evidence(certified_mrb, reloaded):
    _mrb, files, _trace = certified_mrb
    app, volume, seg = reloaded
    obj = json.loads(seg.GetAttribute("MedCert.certificate"))
    obj["evidence"]["operator"]["name"] = "someone else"
    seg.SetAttribute("MedCert.certificate", json.dumps(obj))
    result = verify(app, volume, seg, files)
    assert result.verdict == "FAIL"
    assert result.report.checks["evidence"].code == "evidence.mismatch"


def test_sidecar_certificate_with_segmentation_as_output_record(certified_mrb, reloaded):
    _mrb, files, trace_id = certified_mrb
    app, volume, seg = reloaded
    sidecar = Path(seg.GetAttribute("MedCert.sidecar"))
    result = verify(app, volume, str(sidecar), files, segmentation_node=seg, trace_id=trace_id)
    assert result.report.trace_id == trace_id
    assert result.report.checks["output_record"].status == "pass"
    assert result.report.checks["output_record"].figures["source"] == f"segmentation node '{seg.GetName()}'"
    assert result.verdict == "INCONCLUSIVE"
    # a sidecar alone: no output record given, still a verdict on the rest
    alone = verify(app, volume, sidecar, files)
    assert alone.report.checks["output_record"].status == "skipped"


def test_segment_named_unlike_the_certificate_is_not_counted(certified_mrb, reloaded):
    _mrb, files, _trace = certified_mrb
    app, volume, seg = reloaded
    segmentation = seg.GetSegmentation()
    sid = segmentation.GetSegmentIdBySegmentName("left lung")
    segmentation.GetSegment(sid).SetName("left lung (edited)")
    result = verify(app, volume, seg, files)
    assert result.report.checks["output_record"].status == "fail"


def test_child_process_verification_matches_in_process(certified_mrb, reloaded):
    """The GUI's path: the worker in a child process (real replay), polled, result nodes in the scene."""
    from MedCertVerifyLib.logic import VerifyLogic
    from MedCertVerifyLib.process import start_verify_process

    _mrb, files, _trace = certified_mrb
    app, volume, seg = reloaded
    job = start_verify_process(VerifyLogic(app.scene), volume, seg, trusted_keys=[files.public_key],
                               weights_path=files.weights)
    stages, start = [], time.monotonic()
    while job.running and time.monotonic() - start < 240:
        stages += job.poll()
        time.sleep(0.1)
    result = job.finish()
    assert result.verdict == "PASS", result.report.render()
    assert stages and result.deviation_chart is not None
    assert result.report.layer_deviations and differences_voxels(app, result, volume) == []
    assert not job.cleanup.exists()


def test_module_self_test_scenarios_run_headless(tmp_path):
    """What MedCertSegmentTest and MedCertVerifyTest run inside Slicer, on the headless scene."""
    from MedCertVerifyLib.selftest import run_verify_scenario

    app = HeadlessSlicer(tmp_path / "cache")
    try:
        passed, failed, voxel = run_verify_scenario(app.scene, tmp_path / "work")
    finally:
        app.close()
    assert (passed.verdict, failed.verdict) == ("PASS", "FAIL")
    assert failed.differences.GetAttribute("MedCert.differingVoxels") == "1" and len(voxel) == 3


@pytest.fixture(scope="module")
def dicom_seg_run(tmp_path_factory, keypair, placeholder_weights):
    """A DICOM CT series certified with a DICOM SEG exported: (series, SegmentResult, weights, audit db)."""
    from conftest import synthetic_ct
    from dicom_factory import write_ct_series
    from MedCertSegmentLib.logic import SegmentLogic

    tmp = tmp_path_factory.mktemp("dicomseg")
    vox, _ = synthetic_ct((48, 48, 16))
    series = write_ct_series(tmp / "series", (vox + 1024).astype(np.int16), spacing=(2.5, 2.5, 4.0))
    app = HeadlessSlicer(tmp / "cache")
    try:
        node, files = app.add_dicom_volume(series)
        result = SegmentLogic(app.scene, lookup=files.get).segment(
            node, keypair[0], weights_path=placeholder_weights, output_folder=tmp / "out",
            audit_db=tmp / "audit.sqlite", dicom_seg=True)
    finally:
        app.close()
    return series, result, placeholder_weights, tmp / "audit.sqlite"


@pytest.fixture
def dicom_app(dicom_seg_run, tmp_path):
    """A fresh scene holding the series as a DICOM-loaded volume: (app, volume node, uid -> path dict)."""
    app = HeadlessSlicer(tmp_path / "cache")
    node, files = app.add_dicom_volume(dicom_seg_run[0])
    yield app, node, files
    app.close()


def rows_by_check(result) -> dict[str, list[str]]:
    return {row[0]: row for row in table_rows(result.checks_table)}


def test_dicom_seg_as_certificate_verifies_pass_with_carrier_and_output_record(dicom_seg_run, dicom_app, keypair):
    from MedCertVerifyLib.logic import VerifyLogic

    _series, seg_run, weights, audit_db = dicom_seg_run
    app, node, files = dicom_app
    logic = VerifyLogic(app.scene, lookup=files.get)
    result = logic.verify(node, seg_run.dicom_seg, trusted_keys=[keypair[1]], weights_path=weights,
                          sidecar_path=seg_run.sidecar, audit_db=audit_db)
    assert result.verdict == "PASS", result.report.render()
    assert result.record.trace_id == result.report.trace_id == seg_run.trace_id
    rows = rows_by_check(result)
    assert rows["carrier"][1:3] == ["PASS", "carrier.agree"]
    assert rows["output_record"][1] == "PASS" and '"source": "dicom-seg"' in rows["output_record"][4]
    assert differences_voxels(app, result, node) == []
    # the SEG alone: the certificate from its private block, nothing to cross-check
    alone = logic.verify(node, str(seg_run.dicom_seg), trusted_keys=[keypair[1]], audit_db=audit_db)
    assert rows_by_check(alone)["carrier"][1:3] == ["SKIPPED", "carrier.seg"]
    assert alone.report.checks["output_record"].status == "pass" and alone.verdict == "INCONCLUSIVE"


def test_dicom_seg_is_its_own_output_record(dicom_seg_run, dicom_app, keypair):
    from medcert.errors import MedCertError
    from MedCertVerifyLib.logic import VerifyLogic

    _series, seg_run, _weights, audit_db = dicom_seg_run
    app, node, files = dicom_app
    other = app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "other")
    with pytest.raises(MedCertError, match="itself the output record"):
        VerifyLogic(app.scene, lookup=files.get).verify(node, seg_run.dicom_seg, trusted_keys=[keypair[1]],
                                                        segmentation_node=other, audit_db=audit_db)
    with pytest.raises(MedCertError, match="only applies when the certificate is a DICOM SEG"):
        VerifyLogic(app.scene, lookup=files.get).verify(node, seg_run.sidecar, trusted_keys=[keypair[1]],
                                                        sidecar_path=seg_run.sidecar, audit_db=audit_db)


def test_segmentation_loaded_from_the_dicom_database_finds_its_seg_file(dicom_seg_run, dicom_app):
    import pydicom
    from medcert.errors import InputError
    from MedCertVerifyLib.dicom_seg import certificate_source, seg_file_for_node, seg_file_in_series

    series, seg_run, _weights, _db = dicom_seg_run
    app, _node, files = dicom_app
    seg_uid = str(pydicom.dcmread(seg_run.dicom_seg, stop_before_pixels=True).SOPInstanceUID)
    database = {**files, seg_uid: str(seg_run.dicom_seg)}
    loaded = app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "SEG from the DICOM database")
    sh = app.subject_hierarchy
    item = sh.CreateItem(sh.GetSceneItemID(), loaded)
    sh.SetItemUID(item, "DICOM", "1.2.3.4")  # only the series known: the SEG is found among its files
    series_files = {"1.2.3.4": [*map(str, series.files), str(seg_run.dicom_seg)]}.get
    assert seg_file_for_node(loaded, database.get, series_files) == seg_run.dicom_seg
    sh.SetItemUID(item, "DICOMInstanceUID", seg_uid)  # as Slicer's DICOM plugins set it
    source = certificate_source(segmentation_node=loaded, sidecar=seg_run.sidecar, lookup=database.get)
    assert (source.certificate, source.segmentation_node, source.sidecar) == (seg_run.dicom_seg, None,
                                                                              seg_run.sidecar)
    with pytest.raises(InputError, match="no DICOM database is open"):
        certificate_source(segmentation_node=loaded)
    with pytest.raises(InputError, match="has no file in the DICOM database"):
        certificate_source(segmentation_node=loaded, lookup=files.get)
    with pytest.raises(InputError, match="holds 0 DICOM SEG files"):
        seg_file_in_series(map(str, series.files))
    # a SEG file given explicitly wins over the node
    explicit = certificate_source(segmentation_node=loaded, dicom_seg=seg_run.dicom_seg)
    assert explicit.certificate == seg_run.dicom_seg and explicit.sidecar is None


def test_child_process_verifies_the_dicom_seg(dicom_seg_run, dicom_app, keypair):
    from MedCertVerifyLib.logic import VerifyLogic
    from MedCertVerifyLib.process import start_verify_process

    _series, seg_run, weights, _db = dicom_seg_run
    app, node, files = dicom_app
    job = start_verify_process(VerifyLogic(app.scene, lookup=files.get), node, seg_run.dicom_seg,
                               trusted_keys=[keypair[1]], weights_path=weights, sidecar_path=seg_run.sidecar)
    result = job.finish()
    assert result.verdict == "PASS", result.report.render()
    assert rows_by_check(result)["carrier"][1:3] == ["PASS", "carrier.agree"]
    assert differences_voxels(app, result, node) == []
