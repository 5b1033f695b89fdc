"""MedCertSegment: segment a CT volume with a PyTorch model and issue a signed, replay-verifiable certificate.

The work lives in ``MedCertSegmentLib`` (usable without the GUI); this file holds the module description,
a thin widget, the logic entry points and the self-test.
"""

import logging
import shutil
from pathlib import Path

import qt
import slicer
import vtk
from MedCertSegmentLib.attributes import from_dicom
from MedCertSegmentLib.dependencies import ensure_dependencies
from MedCertSegmentLib.parameters import MedCertSegmentParameterNode, optional_path
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
KEY_SETTING = "MedCert/SigningKey"
REQUIREMENTS = Path(__file__).resolve().parent / "Resources" / "requirements.txt"


class MedCertSegment(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MedCert Segment")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["MedCert contributors"]
        self.parent.helpText = _(
            "Segments the lungs and lung nodules of a CT volume with a PyTorch model and issues a compact "
            "Ed25519-signed certificate of the run. The certificate is attached to the segmentation (it stays "
            "with the scene) and written to a sidecar file <i>StudyInstanceUID</i>.medcert.json. "
            "Check it later with the MedCert Verify module. The bundled demo model is for research and "
            "demonstration only, not for clinical use.")
        self.parent.acknowledgementText = _(
            "MedCert is an open-source project. It builds on 3D Slicer, PyTorch and the Python cryptography "
            "package.")


class MedCertSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin GUI: parameters bound to the .ui, work in a child process polled by a timer."""

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
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedCertSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedCertSegmentLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.createKeyButton.connect("clicked(bool)", self.onCreateKeyButton)
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
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateApply)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if optional_path(self._parameterNode.signingKey) is None:
            remembered = qt.QSettings().value(KEY_SETTING, "")
            if remembered:
                self._parameterNode.signingKey = Path(remembered)
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateApply)
            self._updateApply()

    def _updateApply(self, caller=None, event=None) -> None:
        valid, reason = self.logic.isValid(self._parameterNode) if self._parameterNode else (False, "")
        self.ui.applyButton.enabled = valid and self._job is None
        self.ui.applyButton.toolTip = reason or _("Segment the volume and issue a signed certificate")

    def _setRunning(self, running: bool) -> None:
        self.ui.cancelButton.enabled = running
        self.ui.progressBar.visible = running
        self.ui.progressBar.setRange(0, 0)
        self._updateApply()

    def onApplyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start the segmentation."), waitCursor=True):
            if not self.logic.ensureDependencies():
                return
            p = self._parameterNode
            qt.QSettings().setValue(KEY_SETTING, str(p.signingKey))
            self._job = self.logic.startProcess(p.inputVolume, p.signingKey, optional_path(p.weightsFile),
                                                optional_path(p.outputFolder), p.device, p.exportDicomSeg)
            self.ui.statusLabel.text = _("Starting…")
            self._setRunning(True)
            self._timer.start()

    def onCreateKeyButton(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(self.parent, _("Folder for the new signing key"))
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to create the signing key."), waitCursor=True):
            private, kid = self.logic.createKey(folder)
            self._parameterNode.signingKey = private
            qt.QSettings().setValue(KEY_SETTING, str(private))
            self.ui.statusLabel.text = _("New signing key {kid}").format(kid=kid)

    @staticmethod
    def _addToDicomDatabase(path) -> str:
        """Insert the exported SEG into Slicer's DICOM database, when one is open."""
        db = getattr(slicer, "dicomDatabase", None)
        if db is None or not db.isOpen:
            return _("no DICOM database open")
        db.insert(str(path))
        return _("added to the DICOM database")

    def onCancelButton(self) -> None:
        if self._job is not None:
            self._job.cancel()

    def _poll(self) -> None:
        for stage in self._job.poll():
            self.ui.statusLabel.text = stage
        if self._job.running:
            return
        self._timer.stop()
        job, self._job = self._job, None
        self._setRunning(False)
        if job.cancelled:
            self.ui.statusLabel.text = _("Cancelled.")
            return
        self.ui.statusLabel.text = _("Failed.")
        with slicer.util.tryWithErrorDisplay(_("Segmentation failed."), waitCursor=True):
            self._showResult(job.finish())

    def _showResult(self, result) -> None:
        self._parameterNode.outputSegmentation = result.segmentation
        s = result.summary
        self.ui.statusLabel.text = _("Certified.")
        template = _("Trace id: {trace}\nModel: {model}\nSigning key: {key}\nSidecar: {sidecar}")
        self.ui.summaryLabel.text = template.format(trace=s["trace_id"], model=s["model"], key=s["key_id"],
                                                    sidecar=s["sidecar"])
        if result.dicom_seg is not None:
            self.ui.summaryLabel.text += "\n" + _("DICOM SEG: {path} ({where})").format(
                path=result.dicom_seg, where=self._addToDicomDatabase(result.dicom_seg))
        if result.findings is not None:
            self.ui.findingsTableView.setMRMLTableNode(result.findings)
        slicer.util.setSliceViewerLayers(background=self._parameterNode.inputVolume, foreground=result.anomaly,
                                         foregroundOpacity=0.5, fit=True)


class MedCertSegmentLogic(ScriptedLoadableModuleLogic):
    """Entry points for the GUI and for scripts; the work itself is in ``MedCertSegmentLib``."""

    def getParameterNode(self):
        return MedCertSegmentParameterNode(super().getParameterNode())

    @staticmethod
    def isValid(p) -> tuple[bool, str]:
        if not p.inputVolume:
            return False, _("Select an input volume.")
        key = optional_path(p.signingKey)
        if key is None or not key.is_file():
            return False, _("Select the signing key (Ed25519 private key, PEM).")
        weights = optional_path(p.weightsFile)
        if weights is not None and not weights.is_file():
            return False, _("The weights file does not exist.")
        if p.exportDicomSeg and not from_dicom(p.inputVolume):
            return False, _("DICOM SEG export needs a volume loaded from the DICOM database.")
        return True, ""

    @staticmethod
    def createKey(folder):
        """New Ed25519 key pair in ``folder`` (recorded in the audit log); returns (private key path, key id)."""
        from medcert.audited import create_signing_key

        private, _public, kid = create_signing_key(folder)
        return private, kid

    def ensureDependencies(self, ask: bool = True) -> bool:
        return ensure_dependencies(REQUIREMENTS, "MedCert", ask=ask)

    def core(self):
        """The GUI-free logic on ``slicer.mrmlScene``, finding DICOM files through Slicer's database."""
        from MedCertSegmentLib.logic import SegmentLogic
        from MedCertSegmentLib.node_volume import dicom_database_lookup

        return SegmentLogic(slicer.mrmlScene, dicom_database_lookup())

    def process(self, volumeNode, keyPath, weightsPath=None, outputFolder=None, device="cpu", dicomSeg=False):
        """Segment and certify in this process; returns a ``SegmentResult`` (``dicom_seg``: the SEG path)."""
        return self.core().segment(volumeNode, keyPath, weights_path=weightsPath, output_folder=outputFolder,
                                   device=device, dicom_seg=dicomSeg)

    def startProcess(self, volumeNode, keyPath, weightsPath=None, outputFolder=None, device="cpu",
                     dicomSeg=False):
        """Start the same work in a ``PythonSlicer`` child process; ``finish()`` on it loads the result."""
        from MedCertSegmentLib.process import start_segment_process

        logging.info("MedCert: segmenting %s in a child process", volumeNode.GetName())
        return start_segment_process(self.core(), volumeNode, keyPath, weights_path=weightsPath,
                                     output_folder=outputFolder, device=device, dicom_seg=dicomSeg)


class MedCertSegmentTest(ScriptedLoadableModuleTest):
    """The pytest scenario (Testing/test_slicer_segment.py) inside a real Slicer."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_CertifiedSegmentation()

    def test_CertifiedSegmentation(self) -> None:
        self.delayDisplay("Installing dependencies if needed")
        self.assertTrue(MedCertSegmentLogic().ensureDependencies(ask=False))
        from MedCertSegmentLib.certificate_node import read_certificate
        from MedCertSegmentLib.selftest import run_segment_scenario

        work = Path(slicer.app.temporaryPath) / "MedCertSegmentSelfTest"
        shutil.rmtree(work, ignore_errors=True)
        self.delayDisplay("Segmenting and certifying a synthetic chest CT")
        volumeNode, result, _files = run_segment_scenario(slicer.mrmlScene, work)
        self.assertEqual(read_certificate(result.segmentation).trace_id, result.trace_id)
        self.assertIsNotNone(result.anomaly)
        self.assertEqual(result.segmentation.GetNodeReferenceID("referenceImageGeometryRef"), volumeNode.GetID())
        self.delayDisplay("Test passed")
