"""MedCertVerifyLib inside a real Slicer (ctest): verification in a PythonSlicer child process, and the
signature-and-output-record-only check (no weights) giving INCONCLUSIVE."""

import shutil
import tempfile
import time
import unittest
from pathlib import Path

import slicer


class MedCertVerifyLibTest(unittest.TestCase):
    def setUp(self) -> None:
        from MedCertSegmentLib.dependencies import ensure_dependencies
        from MedCertSegmentLib.selftest import run_segment_scenario

        requirements = Path(slicer.modules.medcertverify.path).parent / "Resources" / "requirements.txt"
        self.assertTrue(ensure_dependencies(requirements, "MedCert", ask=False))
        slicer.mrmlScene.Clear()
        self.work = Path(tempfile.mkdtemp(prefix="MedCertVerifyLibTest-", dir=slicer.app.temporaryPath))
        self.volume, self.result, self.files = run_segment_scenario(slicer.mrmlScene, self.work)

    def tearDown(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)

    def test_child_process_verification_passes(self) -> None:
        from MedCertVerifyLib.logic import VerifyLogic
        from MedCertVerifyLib.process import start_verify_process

        job = start_verify_process(VerifyLogic(slicer.mrmlScene), self.volume, self.result.segmentation,
                                   trusted_keys=[self.files.public_key], weights_path=self.files.weights)
        deadline = time.monotonic() + 600
        while job.running and time.monotonic() < deadline:
            job.poll()
            slicer.app.processEvents()
            time.sleep(0.1)
        verified = job.finish()
        self.assertEqual(verified.verdict, "PASS", verified.report.render())
        self.assertIsNotNone(verified.deviation_chart)

    def test_without_weights_is_inconclusive(self) -> None:
        from MedCertVerifyLib.logic import VerifyLogic

        verified = VerifyLogic(slicer.mrmlScene).verify(self.volume, self.result.segmentation,
                                                        trusted_keys=[self.files.public_key],
                                                        audit_db=self.files.audit_db)
        self.assertEqual(verified.verdict, "INCONCLUSIVE")
        self.assertEqual(verified.report.checks["signature"].status, "pass")
        self.assertEqual(verified.report.checks["output_record"].status, "pass")
