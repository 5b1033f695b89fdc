"""MedCertVerify: replay-verify a MedCert certificate; one verdict per check, differences shown in the scene.

The work lives in ``MedCertVerifyLib`` (usable without the GUI); this file holds the module description,
a thin widget, the logic entry points and the self-test.
"""

import shutil
from pathlib import Path

import qt
import slicer
import vtk
from MedCertSegmentLib import attributes
from MedCertSegmentLib.attributes import from_dicom, has_certificate
from MedCertSegmentLib.dependencies import ensure_dependencies
from MedCertVerifyLib.parameters import MedCertVerifyParameterNode, optional_path
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

POLL_INTERVAL_MS = 250
REQUIREMENTS = Path(__file__).resolve().parent / "Resources" / "requirements.txt"
VERDICT_COLORS = {"PASS": "#1a7f37", "FAIL": "#cf222e", "INCONCLUSIVE": "#9a6700"}


class MedCertVerify(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MedCert Verify")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["MedCertSegment"]
        self.parent.contributors = ["MedCert contributors"]
        self.parent.helpText = _(
            "Checks a MedCert certificate (attached to a segmentation, in a sidecar, or in a DICOM SEG): the "
            "signature against trusted keys, the evidence, the input, the "
            "weights, the replayed computation (per layer, within tolerance) and the stored segmentation. "
            "Each check reports PASS, FAIL or SKIPPED; the verdict is PASS, FAIL or INCONCLUSIVE. Without "
            "a weights file only the signature and the output record are checked (INCONCLUSIVE at best). "
            "Voxels where the segmentation differs from the replay are shown as a 'differences' segment.")
        self.parent.acknowledgementText = _(
            "MedCert is an open-source project. It builds on 3D Slicer, PyTorch and the Python cryptography "
            "package.")


class MedCertVerifyWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin GUI: parameters bound to the .ui, verification in a child process polled by a timer."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._poll)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedCertVerify.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedCertVerifyLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.verifyButton.connect("clicked(bool)", self.onVerifyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self._setRunning(False)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()
        self._timer.stop()
        self.onCancelButton()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateVerify)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        p = self._parameterNode
        if not p.inputVolume:
            p.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if not p.certifiedSegmentation:
            certified = [n for n in slicer.util.getNodesByClass("vtkMRMLSegmentationNode") if has_certificate(n)]
            p.certifiedSegmentation = certified[-1] if certified else None

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateVerify)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateVerify)
            self._updateVerify()

    def _updateVerify(self, caller=None, event=None) -> None:
        valid, reason = self.logic.isValid(self._parameterNode) if self._parameterNode else (False, "")
        self.ui.verifyButton.enabled = valid and self._job is None
        self.ui.verifyButton.toolTip = reason or _("Verify the certificate")

    def _setRunning(self, running: bool) -> None:
        self.ui.cancelButton.enabled = running
        self.ui.progressBar.visible = running
        self.ui.progressBar.setRange(0, 0)
        self._updateVerify()

    def onVerifyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start the verification."), waitCursor=True):
            if not self.logic.ensureDependencies():
                return
            self._job = self.logic.startProcess(self._parameterNode)
            self.ui.verdictLabel.text = _("Verifying…")
            self._setRunning(True)
            self._timer.start()

    def onCancelButton(self) -> None:
        if self._job is not None:
            self._job.cancel()

    def _poll(self) -> None:
        for stage in self._job.poll():
            self.ui.verdictLabel.text = stage
        if self._job.running:
            return
        self._timer.stop()
        job, self._job = self._job, None
        self._setRunning(False)
        if job.cancelled:
            self.ui.verdictLabel.text = _("Cancelled.")
            return
        self.ui.verdictLabel.text = _("Verification did not complete.")
        with slicer.util.tryWithErrorDisplay(_("Verification failed to run."), waitCursor=True):
            self._showResult(job.finish())

    def _showResult(self, result) -> None:
        verdict = result.report.verdict
        self.ui.verdictLabel.text = f"<b style='color:{VERDICT_COLORS[verdict]}'>{verdict}</b> " + _(
            "trace id {trace}").format(trace=result.report.trace_id or "-")
        self.ui.checksTableView.setMRMLTableNode(result.checks_table)
        if result.deviation_chart is not None:
            slicer.modules.plots.logic().ShowChartInLayout(result.deviation_chart)


class MedCertVerifyLogic(ScriptedLoadableModuleLogic):
    """Entry points for the GUI and for scripts; the work itself is in ``MedCertVerifyLib``."""

    def getParameterNode(self):
        return MedCertVerifyParameterNode(super().getParameterNode())

    @staticmethod
    def isValid(p) -> tuple[bool, str]:
        if not p.inputVolume:
            return False, _("Select the input volume.")
        sidecar, seg = optional_path(p.sidecarFile), optional_path(p.dicomSegFile)
        node = p.certifiedSegmentation
        if sidecar is None and seg is None and not has_certificate(node) and not from_dicom(node):
            return False, _("Select a certified segmentation, a DICOM SEG or a sidecar file.")
        if sidecar is not None and not sidecar.is_file():
            return False, _("The sidecar file does not exist.")
        if seg is not None and not seg.is_file():
            return False, _("The DICOM SEG file does not exist.")
        trust = optional_path(p.trustedKeys)
        if trust is None or not trust.exists():
            return False, _("Select the trusted public key (file or folder of *.pub.pem).")
        return True, ""

    def ensureDependencies(self, ask: bool = True) -> bool:
        return ensure_dependencies(REQUIREMENTS, "MedCert", ask=ask)

    def core(self):
        """The GUI-free logic on ``slicer.mrmlScene``, finding DICOM files through Slicer's database."""
        from MedCertSegmentLib.node_volume import dicom_database_lookup
        from MedCertVerifyLib.logic import VerifyLogic

        return VerifyLogic(slicer.mrmlScene, dicom_database_lookup())

    @staticmethod
    def _arguments(p, core) -> tuple[object, dict]:
        """Certificate source (attached, sidecar, DICOM SEG file or a SEG from the DICOM database) and options."""
        from MedCertVerifyLib.dicom_seg import certificate_source, dicom_database_series_files

        source = certificate_source(segmentation_node=p.certifiedSegmentation, sidecar=optional_path(p.sidecarFile),
                                    dicom_seg=optional_path(p.dicomSegFile), lookup=core.lookup,
                                    series_files=dicom_database_series_files())
        kwargs = {"trusted_keys": [optional_path(p.trustedKeys)], "weights_path": optional_path(p.weightsFile),
                  "segmentation_node": source.segmentation_node, "sidecar_path": source.sidecar,
                  "trace_id": p.traceId.strip() or None, "device": p.device}
        return source.certificate, kwargs

    def process(self, p):
        """Verify in this process; returns a ``VerifyResult``."""
        core = self.core()
        certificate, kwargs = self._arguments(p, core)
        return core.verify(p.inputVolume, certificate, **kwargs)

    def startProcess(self, p):
        """Verify in a ``PythonSlicer`` child process; ``finish()`` on it adds the result nodes."""
        from MedCertVerifyLib.process import start_verify_process

        core = self.core()
        certificate, kwargs = self._arguments(p, core)
        return start_verify_process(core, p.inputVolume, certificate, **kwargs)


class MedCertVerifyTest(ScriptedLoadableModuleTest):
    """The pytest scenario (Testing/test_slicer_verify.py) inside a real Slicer."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_VerifyAndTamper()

    def test_VerifyAndTamper(self) -> None:
        self.delayDisplay("Installing dependencies if needed")
        self.assertTrue(MedCertVerifyLogic().ensureDependencies(ask=False))
        from MedCertVerifyLib.selftest import run_verify_scenario

        work = Path(slicer.app.temporaryPath) / "MedCertVerifySelfTest"
        shutil.rmtree(work, ignore_errors=True)
        self.delayDisplay("Certify, verify (PASS), remove one voxel, verify (FAIL)")
        passed, failed, _voxel = run_verify_scenario(slicer.mrmlScene, work)
        self.assertEqual(passed.verdict, "PASS")
        self.assertEqual(failed.verdict, "FAIL")
        self.assertEqual(failed.differences.GetAttribute(attributes.DIFFERING_VOXELS), "1")
        self.delayDisplay("Test passed")
