"""MedCertSegment's logic on a real headless MRML scene (slicer-core): segments, terminology, tags, subject
hierarchy, attached certificate, DICOM source lookup, and the child-process path the GUI uses."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import slicer
import vtk
from conftest import synthetic_ct
from medcert.errors import CertificateError, InputError
from medcert.evidence import mask_digest
from medcert.io import load_volume, read_labelmap_nrrd
from medcert.io.nrrd_io import read_nrrd_grid
from medcert.sidecar import find_certificate, read_sidecar, record_to_json
from medcert.source_digest import source_digest
from slicer_scene import HeadlessSlicer

pytestmark = pytest.mark.slicer

SHAPE = (48, 48, 16)
LABELS = {1: "right lung", 2: "left lung", 3: "lung nodule"}
EXPECTED_CODES = {  # segment -> (context, category, type, modifier, region) code values (SNOMED CT)
    "right lung": ("3D Slicer General Anatomy list", "123037004", "39607008", "24028007", ""),
    "left lung": ("3D Slicer General Anatomy list", "123037004", "39607008", "7771000", ""),
    "lung nodule": ("DICOM master list", "49755003", "27925004", "", "39607008"),
}


@pytest.fixture
def app(tmp_path: Path):
    a = HeadlessSlicer(tmp_path / "cache")
    yield a
    a.close()


def add_ct(app: HeadlessSlicer, name: str = "Chest CT"):
    vox, m = synthetic_ct(SHAPE)
    return app.add_volume(vox, m, name)


def segment(app, node, keypair, weights, tmp_path, **kw):
    from MedCertSegmentLib.logic import SegmentLogic

    return SegmentLogic(app.scene, **kw).segment(node, keypair[0], weights_path=weights,
                                                 output_folder=tmp_path / "out")


def labels_of(app, seg_node, volume_node) -> np.ndarray:
    """Segments exported with Slicer's own logic, label value by segment name (independent of MedCert)."""
    segmentation = seg_node.GetSegmentation()
    out = np.zeros(SHAPE, np.uint8)
    for value, name in LABELS.items():
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segmentation.GetSegmentIdBySegmentName(name))
        lm = app.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(seg_node, ids, lm, volume_node)
        out[np.transpose(slicer.util.arrayFromVolume(lm), (2, 1, 0)) > 0] = value
        app.scene.RemoveNode(lm)
    return out


def test_segmentation_segments_terminology_tags_and_certificate(app, keypair, placeholder_weights, tmp_path):
    from MedCertSegmentLib.certificate_node import read_certificate
    from MedCertSegmentLib.selftest import check_segment_result

    node = add_ct(app)
    result = segment(app, node, keypair, placeholder_weights, tmp_path)
    check_segment_result(result)
    seg_node = result.segmentation
    assert seg_node.IsA("vtkMRMLSegmentationNode")
    assert seg_node.GetNodeReferenceID(seg_node.GetReferenceImageGeometryReferenceRole()) == node.GetID()
    segmentation = seg_node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 3
    for name, (context, category, typ, modifier, region) in EXPECTED_CODES.items():
        segment_ = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(name))
        entry = slicer.vtkSlicerTerminologyEntry()
        assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(segment_.GetTerminology(), entry)
        assert entry.GetTerminologyContextName().endswith(context)
        assert entry.GetCategoryObject().GetCodeValue() == category
        assert entry.GetCategoryObject().GetCodingSchemeDesignator() == "SCT"
        assert entry.GetTypeObject().GetCodeValue() == typ
        assert (entry.GetTypeModifierObject().GetCodeValue() or "") == modifier
        assert (entry.GetRegionObject().GetCodeValue() or "") == region
        for tag, want in (("DICOM.SegmentAlgorithmType", "AUTOMATIC"),
                          ("DICOM.SegmentAlgorithmName", "medcert-untrained-placeholder seed-20261121")):
            value = vtk.reference("")
            assert segment_.GetTag(tag, value) and str(value) == want
    # voxels: exactly the certified mask (digest over labels + geometry, as the certificate binds it)
    labels = labels_of(app, seg_node, node)
    core = result.record.core
    assert mask_digest(labels, result.record.evidence["input"]["source"]["ijk_to_ras"]) == core["d"]["msk"]
    # the attached certificate is the signed record, also in the sidecar
    attached = read_certificate(seg_node)
    assert record_to_json(attached) == record_to_json(result.record)
    assert seg_node.GetAttribute("MedCert.traceId") == result.trace_id
    assert seg_node.GetAttribute("MedCert.keyId") == core["kid"]
    sidecar = tmp_path / "out" / "Chest_CT.medcert.json"
    assert Path(seg_node.GetAttribute("MedCert.sidecar")) == result.sidecar == sidecar
    assert record_to_json(find_certificate(read_sidecar(result.sidecar), result.trace_id)) == record_to_json(attached)
    assert result.summary["trace_id"] == result.trace_id and result.summary["key_id"] == core["kid"]


def test_anomaly_map_and_findings_table(app, keypair, placeholder_weights, tmp_path):
    node = add_ct(app)
    result = segment(app, node, keypair, placeholder_weights, tmp_path)
    anomaly = np.transpose(slicer.util.arrayFromVolume(result.anomaly), (2, 1, 0))
    written = read_nrrd_grid(tmp_path / "out" / f"{result.trace_id}.anomaly.nrrd")[0]
    np.testing.assert_array_equal(anomaly, written)
    display = result.anomaly.GetDisplayNode()
    assert display.GetColorNodeID() == "vtkMRMLPETProceduralColorNodePET-Heat"
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0)
    explanation = tmp_path / "out" / f"{result.trace_id}.explanation.nrrd"
    assert (result.explanation is not None) == explanation.exists()  # the explanation slot, when the run has one
    if result.explanation is not None:
        np.testing.assert_array_equal(np.transpose(slicer.util.arrayFromVolume(result.explanation), (2, 1, 0)),
                                      read_nrrd_grid(explanation)[0])
    findings = result.record.evidence["findings"]
    table = result.findings
    assert table.GetNumberOfRows() == len(findings["organs"]) + len(findings["findings"])
    assert [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())][:3] == ["Structure", "Voxels",
                                                                                       "Volume (mL)"]
    assert table.GetCellText(0, 0) == "right lung"
    assert table.GetCellText(1, 1) == str(findings["organs"]["left lung"]["voxels"])


def test_subject_hierarchy_under_the_input_study(app, keypair, placeholder_weights, tmp_path):
    node = add_ct(app)
    sh = app.subject_hierarchy
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Anonymous")
    study = sh.CreateStudyItem(patient, "Chest study")
    sh.CreateItem(study, node)
    result = segment(app, node, keypair, placeholder_weights, tmp_path)
    for out in (result.segmentation, result.anomaly, result.findings):
        assert sh.GetItemParent(sh.GetItemByDataNode(out)) == study, out.GetName()


def test_volume_without_study_puts_outputs_beside_it(app, keypair, placeholder_weights, tmp_path):
    from MedCertSegmentLib.mrml_outputs import study_item

    node = add_ct(app)
    sh = app.subject_hierarchy
    folder = sh.CreateFolderItem(sh.GetSceneItemID(), "Inputs")
    sh.CreateItem(folder, node)
    assert study_item(app.scene, node) == folder
    result = segment(app, node, keypair, placeholder_weights, tmp_path)
    assert sh.GetItemParent(sh.GetItemByDataNode(result.segmentation)) == folder


def test_node_volume_is_the_node_voxels_and_geometry(app):
    from MedCertSegmentLib.node_volume import volume_from_node

    vox, m = synthetic_ct(SHAPE)
    node = app.add_volume(vox, m, "CT")
    vol = volume_from_node(node)
    np.testing.assert_array_equal(vol.voxels, vox)
    np.testing.assert_allclose(vol.ijk_to_ras, m, atol=1e-12)
    assert vol.identity.instance_uids == () and vol.identity.source_name == "CT"


def test_node_volume_is_the_same_after_mrb_save_and_reload(app, tmp_path):
    """Slicer's IO may move geometry by one ulp (2.5 -> 2.4999999999999996); the Volume must not change."""
    from MedCertSegmentLib.node_volume import volume_from_node

    before = volume_from_node(add_ct(app))
    mrb = app.save_mrb(tmp_path / "scene.mrb")
    other = HeadlessSlicer(tmp_path / "cache2")
    try:
        other.load_mrb(mrb)
        after = volume_from_node(other.scene.GetFirstNodeByName("Chest CT"))
    finally:
        other.close()
    np.testing.assert_array_equal(after.ijk_to_ras, before.ijk_to_ras)
    np.testing.assert_array_equal(after.voxels, before.voxels)
    assert source_digest(after) == source_digest(before)


@pytest.fixture
def dicom_node(app, tmp_path):
    """A volume node as Slicer's DICOM loading leaves it: the series' voxels plus ``DICOM.instanceUIDs``."""
    from dicom_factory import write_ct_series

    vox, _ = synthetic_ct(SHAPE)
    series = write_ct_series(tmp_path / "dicom" / "series", (vox + 1024).astype(np.int16), spacing=(2.5, 2.5, 4.0))
    vol = load_volume(series.folder)
    node = app.add_volume(vol.voxels, vol.ijk_to_ras, "CT from DICOM")
    node.SetAttribute("DICOM.instanceUIDs", " ".join(series.sop_uids))
    files = {uid: str(path) for uid, path in zip(series.sop_uids, series.files, strict=True)}
    return node, series, files


def test_dicom_node_is_read_from_its_original_files(dicom_node):
    from MedCertSegmentLib.node_volume import volume_for_node

    node, series, files = dicom_node
    vol = volume_for_node(node, lookup=files.get)
    assert vol.identity.study_uid == series.study_uid and vol.identity.series_uid == series.series_uid
    assert vol.identity.instance_uids == series.sop_uids
    assert source_digest(vol) == source_digest(load_volume(series.folder))
    assert [Path(p) for p in vol.identity.source_files] == list(series.files)
    # without a lookup (no DICOM database) the node's own voxels are used: no instance UIDs bound
    assert volume_for_node(node).identity.instance_uids == ()


def test_dicom_files_spread_over_folders_are_linked_into_one(dicom_node, tmp_path):
    from MedCertSegmentLib.node_volume import volume_for_node

    node, series, files = dicom_node
    (series.folder / "notes.txt").write_text("not DICOM, and not part of the node")
    moved = dict(files)
    first = next(iter(moved))
    other = tmp_path / "elsewhere"
    other.mkdir()
    moved[first] = str(Path(moved[first]).rename(other / "x.dcm"))
    vol = volume_for_node(node, lookup=moved.get)
    assert vol.identity.instance_uids == series.sop_uids
    assert vol.identity.source_files[0] == moved[first]


def test_dicom_instance_without_file_is_refused(dicom_node):
    from MedCertSegmentLib.node_volume import volume_for_node

    node, series, files = dicom_node
    partial = {uid: p for uid, p in files.items() if uid != series.sop_uids[3]}
    with pytest.raises(InputError, match="1 of 16 DICOM instances"):
        volume_for_node(node, lookup=partial.get)


def test_dicom_segmentation_binds_the_study(app, dicom_node, keypair, placeholder_weights, tmp_path):
    from MedCertSegmentLib.logic import SegmentLogic

    node, series, files = dicom_node
    logic = SegmentLogic(app.scene, lookup=files.get)
    assert logic.default_output_folder(node) == series.folder
    result = logic.segment(node, keypair[0], weights_path=placeholder_weights, output_folder=tmp_path / "out")
    assert result.record.core["study"] == series.study_uid
    assert result.record.core["series"] == series.series_uid
    assert result.sidecar.name == f"{series.study_uid}.medcert.json"
    assert result.record.core["d"]["src"] == source_digest(load_volume(series.folder))


def test_dicom_seg_export_carries_the_attached_certificate(app, dicom_node, keypair, placeholder_weights,
                                                           tmp_path):
    from medcert.dicomseg import read_seg
    from MedCertSegmentLib.certificate_node import read_certificate
    from MedCertSegmentLib.logic import SegmentLogic

    node, series, files = dicom_node
    logic = SegmentLogic(app.scene, lookup=files.get)
    assert logic.dicom_seg_problem(node) is None
    result = logic.segment(node, keypair[0], weights_path=placeholder_weights, output_folder=tmp_path / "out",
                           dicom_seg=True)
    attached = read_certificate(result.segmentation)
    assert result.dicom_seg == tmp_path / "out" / f"{attached.trace_id}.seg.dcm" and result.dicom_seg.is_file()
    seg = read_seg(result.dicom_seg)
    assert seg.certificate.record.trace_id == attached.trace_id == result.trace_id
    assert seg.certificate.record.core == attached.core
    assert str(seg.dataset.StudyInstanceUID) == series.study_uid
    assert result.summary["dicom_seg"] == str(result.dicom_seg)
    assert result.segmentation.GetAttribute("MedCert.dicomSeg") == str(result.dicom_seg)


def test_dicom_seg_export_of_a_volume_not_from_dicom_is_refused_before_any_work(app, dicom_node, keypair,
                                                                                placeholder_weights, tmp_path):
    from MedCertSegmentLib.logic import SegmentLogic
    from MedCertSegmentLib.process import start_segment_process

    plain = add_ct(app, "Plain CT")
    dicom, series, files = dicom_node
    cases = [(SegmentLogic(app.scene, lookup=files.get), plain, "needs a volume loaded from DICOM"),
             (SegmentLogic(app.scene), dicom, "needs the DICOM database"),
             (SegmentLogic(app.scene, lookup={u: p for u, p in files.items() if u != series.sop_uids[0]}.get), dicom,
              "1 of 16 DICOM instances")]
    for logic, node, message in cases:
        assert message in logic.dicom_seg_problem(node)
        for run in (logic.segment, lambda *a, **kw: start_segment_process(logic, *a, **kw)):  # noqa: B023
            with pytest.raises(InputError, match=message) as err:
                run(node, keypair[0], weights_path=placeholder_weights, output_folder=tmp_path / "out",
                    dicom_seg=True)
            assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()
    assert app.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0


def test_default_output_folder_without_files_is_the_scene_folder(app, tmp_path):
    from MedCertSegmentLib.logic import SegmentLogic

    node = add_ct(app)
    app.scene.SetRootDirectory(str(tmp_path))
    assert SegmentLogic(app.scene).default_output_folder(node) == tmp_path.resolve()


def wait_for(job, timeout: float = 240.0) -> list[str]:
    stages, start = [], time.monotonic()
    while job.running and time.monotonic() - start < timeout:
        stages += job.poll()
        time.sleep(0.1)
    return stages + job.poll()


def test_child_process_path_loads_the_same_result(app, keypair, placeholder_weights, tmp_path):
    """The GUI's path: the real CLI in a child process, polled, then loaded into the scene."""
    from MedCertSegmentLib.certificate_node import read_certificate
    from MedCertSegmentLib.logic import SegmentLogic
    from MedCertSegmentLib.process import start_segment_process

    node = add_ct(app)
    logic = SegmentLogic(app.scene)
    job = start_segment_process(logic, node, keypair[0], weights_path=placeholder_weights,
                                output_folder=tmp_path / "out")
    stages = wait_for(job)
    result = job.finish()
    assert "signing" in stages, stages
    assert read_certificate(result.segmentation).trace_id == result.trace_id
    assert result.sidecar == tmp_path / "out" / "Chest_CT.medcert.json"
    # the child certified exactly the node's voxels and geometry
    from MedCertSegmentLib.node_volume import volume_from_node

    assert result.record.core["d"]["src"] == source_digest(volume_from_node(node))
    labels = labels_of(app, result.segmentation, node)
    assert mask_digest(labels, volume_from_node(node).ijk_to_ras) == result.record.core["d"]["msk"]
    assert result.anomaly is not None and result.findings is not None
    assert not job.cleanup.exists()


def test_child_process_cancel_kills_it_and_loads_nothing(app, keypair, placeholder_weights, tmp_path):
    from MedCertSegmentLib.logic import SegmentLogic
    from MedCertSegmentLib.process import start_segment_process

    node = add_ct(app)
    job = start_segment_process(SegmentLogic(app.scene), node, keypair[0], weights_path=placeholder_weights,
                                output_folder=tmp_path / "out")
    job.cancel()
    assert job.cancelled and not job.running and job.returncode != 0
    with pytest.raises(Exception, match="cancelled"):
        job.finish()
    assert app.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
    assert not list(tmp_path.glob("out/*.medcert.json"))


def test_child_process_error_is_one_line(app, keypair, tmp_path):
    from MedCertSegmentLib.logic import SegmentLogic
    from MedCertSegmentLib.process import start_segment_process

    node = add_ct(app)
    job = start_segment_process(SegmentLogic(app.scene), node, keypair[0], weights_path=tmp_path / "none.safetensors",
                                output_folder=tmp_path / "out")
    with pytest.raises(Exception, match="weights file not found"):
        job.finish()


def test_loading_outputs_refuses_a_changed_labelmap(app, keypair, placeholder_weights, tmp_path):
    from medcert.io import write_labelmap_nrrd
    from MedCertSegmentLib.logic import SegmentLogic

    node = add_ct(app)
    logic = SegmentLogic(app.scene)
    result = logic.segment(node, keypair[0], weights_path=placeholder_weights, output_folder=tmp_path / "out")
    labelmap = tmp_path / "out" / f"{result.trace_id}.seg.nrrd"
    labels, m = read_labelmap_nrrd(labelmap)
    labels[0, 0, 0] = 3 - min(labels[0, 0, 0], 2)
    changed = write_labelmap_nrrd(tmp_path / "changed.seg.nrrd", labels, m,
                                  [(v, n, (0.5, 0.5, 0.5)) for v, n in LABELS.items()])
    summary = {"trace_id": result.trace_id, "sidecar": str(result.sidecar), "labelmap": str(changed)}
    with pytest.raises(CertificateError, match="does not match certificate"):
        logic.load_outputs(node, summary)
    summary["labelmap"] = str(labelmap)
    assert logic.load_outputs(node, summary).trace_id == result.trace_id


def test_attached_certificate_that_is_not_a_record_is_refused(app):
    from MedCertSegmentLib.certificate_node import read_certificate

    node = app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "S")
    with pytest.raises(CertificateError, match="carries no MedCert certificate"):
        read_certificate(node)
    node.SetAttribute("MedCert.certificate", json.dumps({"core": [], "evidence": {}}))
    with pytest.raises(CertificateError, match='"core" and "evidence"'):
        read_certificate(node)
    node.SetAttribute("MedCert.certificate", '{"core": {}, "core": {}}')
    with pytest.raises(CertificateError, match="duplicate key"):
        read_certificate(node)


def test_child_process_with_dicom_source_binds_the_study(app, dicom_node, keypair, placeholder_weights, tmp_path):
    from MedCertSegmentLib.logic import SegmentLogic
    from MedCertSegmentLib.process import start_segment_process

    node, series, files = dicom_node
    (series.folder / "notes.txt").write_text("another file: the series is linked into a folder of its own")
    job = start_segment_process(SegmentLogic(app.scene, lookup=files.get), node, keypair[0],
                                weights_path=placeholder_weights, output_folder=tmp_path / "out")
    assert job.args[job.args.index("--series") + 1] == series.series_uid
    result = job.finish()
    assert result.record.core["study"] == series.study_uid
    assert result.sidecar.name == f"{series.study_uid}.medcert.json"
    assert result.record.core["d"]["src"] == source_digest(load_volume(series.folder, series.series_uid))


def test_child_process_exports_the_dicom_seg(app, dicom_node, keypair, placeholder_weights, tmp_path):
    from medcert.dicomseg import read_seg
    from MedCertSegmentLib.certificate_node import read_certificate
    from MedCertSegmentLib.logic import SegmentLogic
    from MedCertSegmentLib.process import start_segment_process

    node, _series, files = dicom_node
    job = start_segment_process(SegmentLogic(app.scene, lookup=files.get), node, keypair[0],
                                weights_path=placeholder_weights, output_folder=tmp_path / "out", dicom_seg=True)
    assert "--dicom-seg" in job.args
    result = job.finish()
    assert result.dicom_seg == tmp_path / "out" / f"{result.trace_id}.seg.dcm"
    assert read_seg(result.dicom_seg).certificate.record.core == read_certificate(result.segmentation).core


def test_screenshot_script_renders_the_certified_scene(tmp_path):
    """scripts/screenshot.py end to end (offscreen EGL rendering), on a coarse phantom."""
    import subprocess
    import sys

    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkIOImage import vtkPNGReader

    if not Path("/usr/lib/x86_64-linux-gnu/libEGL_mesa.so.0").exists():
        pytest.skip("offscreen rendering needs Debian libegl1 libegl-mesa0 libgl1-mesa-dri")
    out = tmp_path / "shot.png"
    repo = Path(__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, str(repo / "scripts/screenshot.py"), "--small", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "verification PASS" in run.stdout
    reader = vtkPNGReader()
    reader.SetFileName(str(out))
    reader.Update()
    assert reader.GetOutput().GetDimensions()[:2] == (1400, 700)
    pixels = vtk_to_numpy(reader.GetOutput().GetPointData().GetScalars())
    assert pixels.std() > 20 and len(np.unique(pixels[:, 0])) > 100  # an image, not a blank window
