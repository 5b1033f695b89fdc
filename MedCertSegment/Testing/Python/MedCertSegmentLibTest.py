"""MedCertSegmentLib inside a real Slicer (ctest): the child-process path through PythonSlicer and the
certificate surviving a scene bundle save and load through Slicer's own IO."""

import shutil
import tempfile
import time
import unittest
from pathlib import Path

import slicer


class MedCertSegmentLibTest(unittest.TestCase):
    def setUp(self) -> None:
        from MedCertSegmentLib.dependencies import ensure_dependencies

        requirements = Path(slicer.modules.medcertsegment.path).parent / "Resources" / "requirements.txt"
        self.assertTrue(ensure_dependencies(requirements, "MedCert", ask=False))
        slicer.mrmlScene.Clear()
        self.work = Path(tempfile.mkdtemp(prefix="MedCertSegmentLibTest-", dir=slicer.app.temporaryPath))

    def tearDown(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)

    def test_child_process_certifies_the_node(self) -> None:
        from medcert.source_digest import source_digest
        from MedCertSegmentLib.certificate_node import read_certificate
        from MedCertSegmentLib.logic import SegmentLogic
        from MedCertSegmentLib.node_volume import volume_from_node
        from MedCertSegmentLib.process import start_segment_process
        from MedCertSegmentLib.selftest import add_synthetic_volume, prepare_files

        files = prepare_files(self.work)
        volume = add_synthetic_volume(slicer.mrmlScene)
        job = start_segment_process(SegmentLogic(slicer.mrmlScene), volume, files.private_key,
                                    weights_path=files.weights, output_folder=self.work / "out")
        deadline = time.monotonic() + 600
        while job.running and time.monotonic() < deadline:
            job.poll()
            slicer.app.processEvents()
            time.sleep(0.1)
        result = job.finish()
        self.assertEqual(read_certificate(result.segmentation).trace_id, result.trace_id)
        self.assertEqual(result.record.core["d"]["src"], source_digest(volume_from_node(volume)))

    def test_certificate_survives_scene_bundle(self) -> None:
        from medcert.sidecar import record_to_json
        from MedCertSegmentLib.certificate_node import read_certificate
        from MedCertSegmentLib.selftest import run_segment_scenario

        _volume, result, _files = run_segment_scenario(slicer.mrmlScene, self.work)
        bundle = str(self.work / "certified.mrb")
        self.assertTrue(slicer.util.saveScene(bundle))
        slicer.mrmlScene.Clear()
        slicer.util.loadScene(bundle)
        reloaded = [n for n in slicer.util.getNodesByClass("vtkMRMLSegmentationNode")
                    if n.GetAttribute("MedCert.traceId") == result.trace_id]
        self.assertEqual(len(reloaded), 1)
        self.assertEqual(record_to_json(read_certificate(reloaded[0])), record_to_json(result.record))
