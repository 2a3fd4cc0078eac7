"""GliomaSuite: the 3D Slicer module.

Thin by design: the engine lives in the ``gliomasuite`` core package (no Slicer dependency) and the
MRML glue in ``GliomaSuiteLib`` (the Segment tab's logic is ``GliomaSuiteLib.SegmentLogic``, the
Follow-up tab's ``GliomaSuiteLib.FollowupLogic``, the Survival tab's ``GliomaSuiteLib.SurvivalLogic``);
this file holds the panel, its parameter node, the installation of dependencies on first use, and the
self-test (Slicer's Developer Tools > Self Tests, or ctest in an extension build).

From Slicer's Python console::

    logic = slicer.util.getModuleLogic("GliomaSuite")
    outcome = logic.segment()        # volumes found by name; waits, then returns the outcome
    outcome.segmentationNode, outcome.volumesCm3
    survival = logic.estimateSurvival(outcome.segmentationNode, age=61)
    survival.result["median_survival"], survival.resultsTable
    from GliomaSuiteLib.FollowupLogic import TimePointInput
    logic.followupLogic.startFollowup([TimePointInput("/data/pre", date="2024-01-10"),
                                       TimePointInput("/data/post", date="2024-04-02")])
    followup = logic.followupLogic.waitForCompletion()
    logic.followupLogic.responseSentence()
"""

import enum
import importlib
import importlib.util
import logging
import pkgutil
import re
import traceback
from importlib import metadata
from pathlib import Path
from typing import Optional

import numpy as np
import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from gliomasuite.errors import GliomaSuiteError
from gliomasuite.labels import ED, ET, NCR
from gliomasuite.modalities import ALWAYS_NEEDED, MODALITIES, display_name
import GliomaSuiteLib
from GliomaSuiteLib.FollowupLogic import FollowupLogic, TimePointInput
from GliomaSuiteLib.Process import CANCELLED, DONE
from GliomaSuiteLib.SegmentLogic import SegmentLogic, SegmentOutcome
from GliomaSuiteLib.SurvivalLogic import SURVIVAL_LAYOUT_ID, SurvivalLogic, SurvivalOutcome
from GliomaSuiteWidgets.FollowupPanel import FollowupPanel
from GliomaSuiteWidgets.ReportPanel import ReportPanel

#: Packages Slicer or its PyTorch extension provide: never replaced by our requirements' dependencies.
SLICER_OWN_PACKAGES = ["numpy", "SimpleITK", "torch"]
#: Oldest PyTorch the core works with (pyproject.toml says the same).
TORCH_REQUIREMENT = ">=2.2"


class GliomaSuite(ScriptedLoadableModule):
    """Module metadata shown in Slicer's module list and Help & Acknowledgement panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("GliomaSuite")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.contributors = ["GliomaSuite contributors"]
        self.parent.helpText = _("""
GliomaSuite works on a glioma patient's MRI (T1, T1ce, T2 and FLAIR; T1ce and FLAIR at least).
<ul>
<li><b>Segment</b>: an ensemble of V-Nets labels the necrotic core, edema and enhancing tumour as
editable segments on the T1ce, with a volume table that follows your edits; it first checks that the
images are brain MRI with each sequence in its place, and can add a map of where it is unsure.
Runs in the background (GPU when there is one); Cancel leaves the scene as it was.</li>
<li><b>Survival</b>: from the segmentation and the patient's age, a Cox proportional-hazards
survival curve with its band and the patient's self-organising-map cluster.</li>
<li><b>Follow-up</b>: loads later scans registered to the baseline, with the RANO 2.0 response,
draggable diameter lines, volumes over time, and a recurrence probability and next-visit map from a
model trained on simulated growth (its limits are one click away).</li>
<li><b>Report</b>: a PDF with every number also in JSON and CSV; for volumes from Slicer's DICOM
database also a DICOM SEG and SR for the PACS.</li>
</ul>
Each result names its model and version; their training and validation figures are in the model
cards (gliomasuite/models/*.md beside this module). Research software: not for clinical diagnosis or treatment decisions.
<p>References:</p>
<ul>
<li>Milletari F, Navab N, Ahmadi SA. V-Net: Fully Convolutional Neural Networks for Volumetric
Medical Image Segmentation. 3DV 2016.
<a href="https://arxiv.org/abs/1606.04797">arXiv:1606.04797</a></li>
<li>Menze BH, et al. The Multimodal Brain Tumor Image Segmentation Benchmark (BRATS).
IEEE Trans Med Imaging 2015;34(10):1993-2024.
<a href="https://doi.org/10.1109/TMI.2014.2377694">doi:10.1109/TMI.2014.2377694</a></li>
<li>Bakas S, et al. Advancing The Cancer Genome Atlas glioma MRI collections with expert
segmentation labels and radiomic features. Sci Data 2017;4:170117.
<a href="https://doi.org/10.1038/sdata.2017.117">doi:10.1038/sdata.2017.117</a></li>
<li>Wen PY, et al. RANO 2.0: Update to the Response Assessment in Neuro-Oncology Criteria for High-
and Low-Grade Gliomas in Adults. J Clin Oncol 2023;41(33):5187-5199.
<a href="https://doi.org/10.1200/JCO.23.01059">doi:10.1200/JCO.23.01059</a></li>
</ul>
""")
        self.parent.acknowledgementText = _("""
GliomaSuite is developed by the GliomaSuite contributors and released under the Apache License 2.0.
It builds on 3D Slicer, PyTorch and MONAI, and follows the label conventions of the BraTS
challenges; we thank their organisers and the institutions that contributed the data.
""")


class Device(enum.Enum):
    """Where the V-Net runs (the core's ``--device``)."""

    AUTO = "auto"
    CPU = "cpu"
    GPU = "gpu"

    def label(self) -> str:  # shown in the combo box by the parameter node's GUI connection
        return {Device.AUTO: _("Automatic (GPU if available)"), Device.CPU: _("CPU"), Device.GPU: _("GPU")}[self]


class Quality(enum.Enum):
    """How carefully it runs: once, with flip test-time augmentation (the core's ``--tta``), or with
    those passes and the map of where they disagree (``--uncertainty``)."""

    FAST = "fast"
    TTA = "tta"
    UNCERTAINTY = "uncertainty"

    def label(self) -> str:
        return {Quality.FAST: _("Fast"), Quality.TTA: _("Test-time augmentation (smoother, about 8x slower)"),
                Quality.UNCERTAINTY: _("Test-time augmentation and a map of where it is unsure")}[self]


@parameterNodeWrapper
class GliomaSuiteParameterNode:
    """The module's settings, saved with the scene.

    t1, t1ce, t2, flair: the Segment inputs. device, quality: how the V-Net runs.
    segmentation: the last result, which the next run updates unless the user has edited it; the
    Survival tab measures it.
    age: the patient's age in years for Survival; 0 means not entered (the spin box's "not
    entered"), which Survival refuses rather than assume an age.
    followEdits: estimate survival again after each edit of the segmentation.
    """

    t1: vtkMRMLScalarVolumeNode
    t1ce: vtkMRMLScalarVolumeNode
    t2: vtkMRMLScalarVolumeNode
    flair: vtkMRMLScalarVolumeNode
    device: Device = Device.AUTO
    quality: Quality = Quality.FAST
    segmentation: vtkMRMLSegmentationNode
    age: float = 0.0
    followEdits: bool = True


class GliomaSuiteWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: the Segment and Survival sections, and sections for what comes next."""

    #: How often the panel collects the background job's progress (ms).
    POLL_INTERVAL_MS = 200
    #: Survival is estimated again this long after the last edit of a burst (brush strokes) (ms).
    SURVIVAL_UPDATE_DELAY_MS = 800

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._fillPending = False
        self._survivalUpdate = None
        self.followupPanel = None
        self.reportPanel = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/GliomaSuite.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = GliomaSuiteLogic()
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(self.POLL_INTERVAL_MS)
        self.pollTimer.connect("timeout()", self.onPollTimer)
        self.survivalTimer = qt.QTimer()
        self.survivalTimer.setSingleShot(True)
        self.survivalTimer.setInterval(self.SURVIVAL_UPDATE_DELAY_MS)
        self.survivalTimer.connect("timeout()", self.onSurvivalTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self.onNodeAdded)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.estimateButton.connect("clicked(bool)", self.onEstimateButton)
        self.ui.followEditsCheckBox.connect("toggled(bool)", self.onFollowEditsToggled)
        self.followupPanel = FollowupPanel(self.ui.followUpCollapsibleButton, self.ui.followUpComingLabel, self.logic)
        self.reportPanel = ReportPanel(self.ui.reportCollapsibleButton, self.ui.reportComingLabel, self.logic,
                                       lambda: self._parameterNode)

        self.initializeParameterNode()

    def cleanup(self):
        self.pollTimer.stop()
        self.survivalTimer.stop()
        self.removeObservers()
        if self.followupPanel:
            self.followupPanel.close()
        if self.reportPanel:
            self.reportPanel.close()
        if self.logic:
            self.logic.segmentLogic.cleanup()
            self.logic.survivalLogic.cleanup()

    def enter(self):
        self.initializeParameterNode()
        self.followupPanel.refresh()

    def exit(self):
        # The GUI lets go of the parameter node; a running job carries on and its timer keeps polling.
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event):
        self.logic.segmentLogic.cleanup()  # a running job is cancelled: its inputs are going away
        self.survivalTimer.stop()
        self.logic.survivalLogic.cleanup()
        self.ui.survivalStatusLabel.text = ""
        self.followupPanel.cleanup()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()
            self.followupPanel.refresh()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        self._fillEmptyInputs()

    def setParameterNode(self, parameterNode: Optional[GliomaSuiteParameterNode]):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._updateButtons()

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def onNodeAdded(self, caller, event, node):
        if isinstance(node, vtkMRMLScalarVolumeNode) and not self._fillPending:
            self._fillPending = True
            qt.QTimer.singleShot(0, self._fillEmptyInputs)  # once loading has named the node

    def _fillEmptyInputs(self):
        """Choose volumes by name for inputs the user has not chosen; never replace a choice."""
        self._fillPending = False
        if not self._parameterNode or self.logic.segmentLogic.isRunning:
            return
        for modality, node in self.logic.segmentLogic.inputsFromNodeNames().items():
            if node is not None and getattr(self._parameterNode, modality) is None:
                setattr(self._parameterNode, modality, node)

    def _inputs(self) -> dict:
        return {modality: getattr(self._parameterNode, modality) for modality in MODALITIES}

    def _updateButtons(self, caller=None, event=None):
        self._updateSegmentButton()
        self._updateEstimateButton()

    def _updateSegmentButton(self):
        running = self.logic is not None and self.logic.segmentLogic.isRunning
        self.ui.segmentButton.text = _("Cancel") if running else _("Segment")
        for widget in (self.ui.t1Selector, self.ui.t1ceSelector, self.ui.t2Selector, self.ui.flairSelector,
                       self.ui.deviceComboBox, self.ui.qualityComboBox):
            widget.enabled = not running
        if running:
            self.ui.segmentButton.enabled = True
            self.ui.segmentButton.toolTip = _("Stop the segmentation; the scene is left as it was.")
            return
        # T1 and T2 are optional (segment_study then uses the model trained without them).
        inputs = self._inputs() if self._parameterNode else {}
        missing = [display_name(m) for m in ALWAYS_NEEDED if inputs.get(m) is None]
        self.ui.segmentButton.enabled = not missing
        self.ui.segmentButton.toolTip = (
            _("Choose a volume for: {missing}").format(missing=", ".join(missing)) if missing else
            _("Segment the necrotic core, edema and enhancing tumour in the background."))

    def onSegmentButton(self):
        segmentLogic = self.logic.segmentLogic
        if segmentLogic.isRunning:
            segmentLogic.cancel()
            self.ui.segmentButton.enabled = False
            self.ui.statusLabel.text = _("Cancelling...")
            return
        self._startSegmentation()

    def _startSegmentation(self, skipBrainCheck: bool = False):
        segmentLogic = self.logic.segmentLogic
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = _("Starting...")
        try:
            with slicer.util.WaitCursor():
                self.logic.ensureDependencies()
                segmentLogic.startSegmentation(
                    self._inputs(), device=self._parameterNode.device.value,
                    tta=self._parameterNode.quality in (Quality.TTA, Quality.UNCERTAINTY),
                    uncertainty=self._parameterNode.quality == Quality.UNCERTAINTY,
                    outputNode=self._parameterNode.segmentation, skipBrainCheck=skipBrainCheck, onProgress=self.onProgress, onFinished=self.onFinished)
        except GliomaSuiteError as error:
            self.ui.statusLabel.text = ""
            slicer.util.errorDisplay(str(error), windowTitle=_("GliomaSuite"))
            return
        except Exception as error:
            self.ui.statusLabel.text = ""
            logging.exception("GliomaSuite: Segment could not start")
            slicer.util.errorDisplay(_("Segment could not start: {error}").format(error=error),
                                     windowTitle=_("GliomaSuite"), detailedText=traceback.format_exc())
            return
        self._updateSegmentButton()
        self.pollTimer.start()

    def onPollTimer(self):
        try:
            running = self.logic.segmentLogic.poll()
        except Exception as error:  # a fault in our callbacks: stop cleanly and say so
            self.pollTimer.stop()
            self.logic.segmentLogic.cancel()
            logging.exception("GliomaSuite: handling the segmentation's progress failed")
            slicer.util.errorDisplay(_("Segmentation stopped: {error}").format(error=error),
                                     windowTitle=_("GliomaSuite"), detailedText=traceback.format_exc())
            self._updateSegmentButton()
            return
        if not running and not self.logic.segmentLogic.isRunning:  # (a new job may have started meanwhile)
            self.pollTimer.stop()
            self._updateSegmentButton()

    def onProgress(self, fraction: float, message: str):
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message

    def onFinished(self, outcome: SegmentOutcome):
        self.pollTimer.stop()
        self._updateSegmentButton()
        if outcome.state == DONE:
            if self._parameterNode:
                self._parameterNode.segmentation = outcome.segmentationNode
            self.ui.progressBar.value = 100
            volumes = outcome.volumesCm3
            summary = _("Done in {seconds:.0f} s on {device}. Whole tumour {wt:.1f} cm3, tumour core {tc:.1f} cm3, "
                        "enhancing tumour {et:.1f} cm3 (table beside the views; it follows your edits).").format(
                seconds=outcome.seconds, device=outcome.device.upper() or "?", wt=volumes["WT"],
                tc=volumes["TC"], et=volumes["ET"])
            checking = ([_("Most worth checking (magenta overlay): ") + "; ".join(outcome.uncertainRegions)]
                        if outcome.uncertainRegions else [])
            self.ui.statusLabel.text = "\n".join([summary] + checking + outcome.notes)
            self.logic.showResult(outcome, self._parameterNode.t1ce)
        elif outcome.state == CANCELLED:
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Cancelled; nothing was added to the scene.")
        else:
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Segmentation failed (see the message).")
            if outcome.brainCheck:  # the user may know better than the check: ask, never assume
                if slicer.util.confirmYesNoDisplay(outcome.errorMessage + "\n\n" + _("Segment anyway?"),
                                                   windowTitle=_("GliomaSuite")):
                    # Not from here: this runs inside onPollTimer, which stops the timer when it returns.
                    qt.QTimer.singleShot(0, lambda: self._startSegmentation(skipBrainCheck=True))
                else:
                    self.ui.statusLabel.text = _("Not segmented: the volumes failed the brain check.")
                return
            slicer.util.errorDisplay(outcome.errorMessage, windowTitle=_("GliomaSuite"))

    # --- Survival ------------------------------------------------------------------------------------

    def _updateEstimateButton(self):
        segmentation = self._parameterNode.segmentation if self._parameterNode else None
        self.ui.estimateButton.enabled = segmentation is not None
        self.ui.estimateButton.toolTip = (
            _("Choose the tumour segmentation first (Segment makes one).") if segmentation is None else
            _("Estimate survival from the tumour's shape and the age, and show the curves and the "
              "self-organising map next to the 3D view."))

    def onEstimateButton(self):
        segmentation = self._parameterNode.segmentation
        age = self._parameterNode.age or None  # 0 is the spin box's "not entered": no age is assumed
        try:
            with slicer.util.WaitCursor():
                outcome = self.logic.estimateSurvival(segmentation, age, referenceVolume=self._parameterNode.t1ce)
        except GliomaSuiteError as error:  # the user's input: said next to it, no dialog
            self.ui.survivalStatusLabel.text = _("Not estimated: {message}").format(message=error)
            return
        except Exception as error:
            logging.exception("GliomaSuite: survival estimate failed")
            self.ui.survivalStatusLabel.text = ""
            slicer.util.errorDisplay(_("Survival could not be estimated: {error}").format(error=error),
                                     windowTitle=_("GliomaSuite"), detailedText=traceback.format_exc())
            return
        self.ui.survivalStatusLabel.text = self._survivalSummary(outcome)
        self.survivalTimer.stop()
        self.logic.survivalLogic.stopFollowingEdits()  # now this segmentation's estimate is on show
        self.onFollowEditsToggled(self._parameterNode.followEdits)

    def onFollowEditsToggled(self, follow: bool):
        segmentation = self._parameterNode.segmentation if self._parameterNode else None
        survivalLogic = self.logic.survivalLogic
        if not follow or segmentation is None or not survivalLogic.hasEstimate(segmentation):
            self.survivalTimer.stop()
            survivalLogic.stopFollowingEdits()
            return
        survivalLogic.followEdits(segmentation, schedule=self._scheduleSurvivalUpdate,
                                  onUpdated=self.onSurvivalUpdated, onError=self.onSurvivalUpdateFailed)

    def _scheduleSurvivalUpdate(self, update):
        self._survivalUpdate = update
        self.survivalTimer.start()  # restarted by each edit: one estimate after the last of a burst

    def onSurvivalTimer(self):
        update, self._survivalUpdate = self._survivalUpdate, None
        if update is None:
            return
        try:
            with slicer.util.WaitCursor():
                update()
        except Exception as error:  # a fault of ours: stop following rather than fail on every edit
            logging.exception("GliomaSuite: survival update after an edit failed")
            self.logic.survivalLogic.stopFollowingEdits()
            self.ui.survivalStatusLabel.text = _(
                "Survival is no longer updated after edits ({error}); click Estimate survival to try again.").format(
                error=error)

    def onSurvivalUpdated(self, outcome: SurvivalOutcome):
        self.ui.survivalStatusLabel.text = _("Updated after your edit. ") + self._survivalSummary(outcome)

    def onSurvivalUpdateFailed(self, segmentationNode, message: str):
        self.ui.survivalStatusLabel.text = _(
            "Not updated after the last edit of '{name}': {message} The charts still show the previous "
            "estimate.").format(name=segmentationNode.GetName(), message=message)

    @staticmethod
    def _survivalSummary(outcome: SurvivalOutcome) -> str:
        warnings = outcome.result["warnings"]
        return "\n".join([outcome.result["sentence"]] + ([_("Warnings: ") + " ".join(warnings)] if warnings else []) +
                         [_("The curves, the self-organising map and the results table ('{table}') are shown "
                            "beside the 3D view.").format(table=outcome.resultsTable.GetName())])


class GliomaSuiteLogic(ScriptedLoadableModuleLogic):
    """Entry point for scripts that drive the module without its panel.

    The work is done by ``GliomaSuiteLib`` (``self.segmentLogic``: see
    :class:`GliomaSuiteLib.SegmentLogic.SegmentLogic`; ``self.followupLogic``: see
    :class:`GliomaSuiteLib.FollowupLogic.FollowupLogic`; ``self.survivalLogic``: see
    :class:`GliomaSuiteLib.SurvivalLogic.SurvivalLogic`) and the ``gliomasuite`` core; this class adds
    the parameter node, the installation of dependencies on first use, and the application's views.
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.segmentLogic = SegmentLogic(slicer.mrmlScene, slicer.app.applicationLogic())
        self.followupLogic = FollowupLogic(slicer.mrmlScene, slicer.app.applicationLogic())
        self.survivalLogic = SurvivalLogic(slicer.mrmlScene)

    def getParameterNode(self) -> GliomaSuiteParameterNode:
        return GliomaSuiteParameterNode(super().getParameterNode())

    def segment(self, inputs: Optional[dict] = None, device: str = "auto", tta: bool = False,
                outputNode=None, waitForCompletion: bool = True, **callbacks) -> Optional[SegmentOutcome]:
        """Segment from a script: inputs default to the volumes found by name. With
        ``waitForCompletion`` it blocks and returns the outcome; otherwise call
        ``self.segmentLogic.poll()`` (or ``waitForCompletion()``) yourself."""
        self.ensureDependencies()
        inputs = inputs or self.segmentLogic.inputsFromNodeNames()
        self.segmentLogic.startSegmentation(inputs, device=device, tta=tta, outputNode=outputNode, **callbacks)
        return self.segmentLogic.waitForCompletion() if waitForCompletion else None

    def ensureDependencies(self) -> None:
        """Install, after asking, what Segment needs that this Slicer lacks.

        PyTorch comes through the PyTorch extension, which picks the build that suits the computer's
        GPU; the rest from ``Resources/requirements.txt``, without replacing packages Slicer ships.
        Called on the first Segment, never at import: installing is slow and must be the user's choice.
        """
        self._ensureTorch()
        self._ensureRequirements(Path(__file__).parent / "Resources" / "requirements.txt")

    def _ensureTorch(self) -> None:
        if importlib.util.find_spec("torch") is not None:
            return
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            raise GliomaSuiteError(_(
                "GliomaSuite needs PyTorch, which Slicer installs through the PyTorch extension: install "
                "'PyTorch' from the Extensions Manager, restart Slicer, then click Segment again.")) from None
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled() and torchLogic.installTorch(
                askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT) is None:
            raise GliomaSuiteError(_(
                "PyTorch was not installed, so GliomaSuite cannot segment yet. Click Segment again to "
                "install it, or install it in the PyTorch Utils module."))

    def _ensureRequirements(self, requirementsFile: Path) -> None:
        try:
            packaging = importlib.import_module("slicer.packaging")
        except ModuleNotFoundError:  # Slicer before slicer.packaging: the same steps by hand
            packaging = None
        try:
            if packaging is not None:
                packaging.pip_ensure(packaging.load_requirements(requirementsFile), requester="GliomaSuite",
                                     skip_packages=SLICER_OWN_PACKAGES)
                return
            missing = _missingRequirements(requirementsFile)
            if not missing:
                return
            if not slicer.util.confirmOkCancelDisplay(
                    _("GliomaSuite needs these Python packages, which will be installed into Slicer now:"),
                    windowTitle=_("GliomaSuite: install Python packages"), detailedText="\n".join(missing)):
                raise RuntimeError("User declined package installation")
            with slicer.util.WaitCursor():
                slicer.util.pip_install(missing)
        except RuntimeError as error:
            if "declined" in str(error):
                raise GliomaSuiteError(_(
                    "GliomaSuite cannot segment without its Python packages ({file}); click Segment again "
                    "and accept the installation.").format(file=requirementsFile.name)) from error
            raise

    def showResult(self, outcome: SegmentOutcome, t1ceNode) -> None:
        """Lay the views out for a result: T1ce in the slices, the volume table beside them, 3D reset."""
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:  # no main window (batch mode)
            return
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
        appLogic = slicer.app.applicationLogic()
        appLogic.GetSelectionNode().SetActiveTableID(outcome.tableNode.GetID())
        appLogic.PropagateTableSelection()
        if t1ceNode is not None:
            slicer.util.setSliceViewerLayers(background=t1ceNode, fit=True)
        slicer.util.resetThreeDViews()

    def showFollowup(self, nodes) -> None:
        """Lay the views out for a follow-up: the latest scan in the slices with its segmentation, the
        volume table and chart beside them, and the sequence browser's toolbar to step through time."""
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:  # no main window (batch mode)
            return
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView)
        appLogic = slicer.app.applicationLogic()
        appLogic.GetSelectionNode().SetActiveTableID(nodes.tableNode.GetID())
        appLogic.PropagateTableSelection()
        appLogic.GetSelectionNode().SetActivePlotChartID(nodes.chartNode.GetID())
        appLogic.PropagatePlotChartSelection()
        volume = next((nodes.volumeNode(m) for m in ("t1ce", "t1", "flair", "t2") if nodes.volumeNode(m)), None)
        if volume is not None:
            slicer.util.setSliceViewerLayers(background=volume, fit=True)
        sequences = getattr(slicer.modules, "sequences", None)
        if sequences is not None:
            sequences.toolBar().setActiveBrowserNode(nodes.browserNode)
            sequences.setToolBarVisible(True)
        slicer.util.resetThreeDViews()

    def estimateSurvival(self, segmentationNode, age, referenceVolume=None, show: bool = True) -> SurvivalOutcome:
        """Estimate survival for a segmentation and an age (years); with ``show``, lay the charts out
        next to the 3D view. ``referenceVolume`` (the T1ce) is used only for a segmentation that names
        no reference volume. Raises :class:`GliomaSuiteError` with the reason when it cannot."""
        if segmentationNode is None:
            raise GliomaSuiteError(_("No tumour segmentation is selected; run Segment, or choose one."))
        outcome = self.survivalLogic.estimate(segmentationNode, age, referenceVolume)
        if show:
            self.showSurvival(outcome)
        return outcome

    def showSurvival(self, outcome: SurvivalOutcome) -> None:
        """The survival layout: 3D view, survival curves and the SOM side by side; slices and the
        results table below."""
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:  # no main window (batch mode)
            return
        self.survivalLogic.showInLayout(layoutManager.layoutLogic().GetLayoutNode(), outcome)


def _missingRequirements(requirementsFile: Path) -> list:
    """Lines of a requirements file whose package is not installed (the version is not checked)."""
    missing = []
    for line in requirementsFile.read_text(encoding="utf-8").splitlines():
        requirement = line.split("#", 1)[0].strip()
        if not requirement:
            continue
        name = re.split(r"[<>=!~;\[\s]", requirement, maxsplit=1)[0]
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(requirement)
    return missing


class GliomaSuiteTest(ScriptedLoadableModuleTest):
    """Self-test run inside Slicer: the packages import, the Segment and Survival tabs work, and (where
    PyTorch and the shipped model are installed) a real segmentation runs through Slicer's own Python."""

    #: Our packages. A ModuleNotFoundError for one of these is a packaging fault (a file missing
    #: from GliomaSuite/CMakeLists.txt); for any other name it is an optional dependency.
    OWN_PACKAGES = ("gliomasuite", "GliomaSuiteLib")

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_PackagesImport()
        self.setUp()
        self.test_SegmentTab()
        self.setUp()
        self.test_SurvivalTab()
        self.setUp()
        self.test_FollowupTab()
        self.setUp()
        self.test_SegmentRun()

    def test_PackagesImport(self):
        """Every module of the core and of GliomaSuiteLib imports in Slicer.

        This catches what only Slicer's environment reveals: a file left out of the packaged
        extension, or code that Slicer's Python version or bundled libraries cannot run.
        Modules that need a dependency installed on first use (torch, say) are reported, not failed.
        """
        self.delayDisplay(_("Importing the GliomaSuite packages"))
        for packageName in self.OWN_PACKAGES:
            package = importlib.import_module(packageName)
            logging.info(f"{packageName} imported from {package.__path__[0]}")
            # onerror: a subpackage that fails to import is yielded anyway and imported below,
            # where its error is judged like any other module's.
            modules = pkgutil.walk_packages(
                package.__path__, packageName + ".", onerror=lambda name: None
            )
            for module in modules:
                try:
                    importlib.import_module(module.name)
                except ModuleNotFoundError as error:
                    missing = (error.name or "").split(".")[0]
                    if not missing or missing in self.OWN_PACKAGES:
                        raise
                    logging.info(f"{module.name} not checked: it needs {error.name}, not installed")
        self.delayDisplay(_("GliomaSuite packages import"))

    def _syntheticStudy(self):
        """Four volumes named as BraTS names them, with a nested tumour (ED, then ET, then NCR)."""
        shape = (64, 96, 96)
        k, j, i = np.indices(shape)
        brain = ((k - 32) / 28.0) ** 2 + ((j - 48) / 40.0) ** 2 + ((i - 48) / 36.0) ** 2 < 1
        distance = np.sqrt((k - 32) ** 2 + (j - 40) ** 2 + (i - 58) ** 2)
        labels = np.zeros(shape, np.uint8)
        labels[distance < 14] = ED
        labels[distance < 9] = ET
        labels[distance < 5] = NCR
        noise = np.random.default_rng(0).normal(0, 10, shape)
        nodes = {}
        for modality, contrast in zip(MODALITIES, (1.0, 1.6, 0.7, 1.3)):
            array = (brain * (400 + noise) + (labels > 0) * 300 * contrast).astype(np.float32)
            nodes[modality] = slicer.util.addVolumeFromArray(array, name=f"SelfTest_{modality}")
        return nodes, labels

    def test_SegmentTab(self):
        """Inputs are chosen by name in the panel; a label map becomes segments, a 3D view and a table."""
        self.delayDisplay(_("Checking the Segment tab"))
        slicer.util.selectModule("GliomaSuite")  # entering the module connects its panel to the scene
        widget = slicer.util.getModuleWidget("GliomaSuite")
        nodes, labels = self._syntheticStudy()
        slicer.app.processEvents()  # the panel fills its inputs after the nodes are added
        for modality in MODALITIES:
            self.assertIs(getattr(widget.ui, f"{modality}Selector").currentNode(), nodes[modality])
        self.assertTrue(widget.ui.segmentButton.enabled)

        segmentLogic = GliomaSuiteLogic().segmentLogic
        self.assertEqual(segmentLogic.inputsFromNodeNames(), nodes)
        labelImage = GliomaSuiteLib.image_on_volume_grid(labels, nodes["t1ce"])
        segmentation = segmentLogic.loadResult(labelImage, nodes["t1ce"])
        self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(), 3)
        self.assertFalse(segmentLogic.isEdited(segmentation))
        voxelCm3 = float(np.prod(nodes["t1ce"].GetSpacing())) / 1000.0
        volumes = segmentLogic.tableVolumes(segmentation.GetNodeReference("GliomaSuite.volumeTable"))
        self.assertAlmostEqual(volumes["WT"], np.count_nonzero(labels) * voxelCm3, places=3)
        self.assertAlmostEqual(volumes["ET"], np.count_nonzero(labels == ET) * voxelCm3, places=3)
        rendering = segmentLogic.showVolumeRendering(nodes["t1ce"])
        self.assertTrue(rendering.GetVisibility())
        self.delayDisplay(_("Segment tab works"))

    def test_SurvivalTab(self):
        """The panel refuses to estimate without an age, then shows the curves and SOM beside the 3D view
        and estimates again after an edit."""
        self.delayDisplay(_("Checking the Survival tab"))
        slicer.util.selectModule("GliomaSuite")
        widget = slicer.util.getModuleWidget("GliomaSuite")
        nodes, labels = self._syntheticStudy()
        labelImage = GliomaSuiteLib.image_on_volume_grid(labels, nodes["t1ce"])
        segmentation = GliomaSuiteLogic().segmentLogic.loadResult(labelImage, nodes["t1ce"])
        parameters = widget._parameterNode
        parameters.segmentation = segmentation
        parameters.age = 0.0  # the spin box's "not entered"
        self.assertTrue(widget.ui.estimateButton.enabled)

        widget.ui.estimateButton.click()
        self.assertIn("age is missing", widget.ui.survivalStatusLabel.text)
        self.assertIsNone(segmentation.GetNodeReference("GliomaSuite.survival.chart"))

        parameters.age = 60.0
        parameters.followEdits = True
        widget.ui.estimateButton.click()
        self.assertIn("median survival", widget.ui.survivalStatusLabel.text)
        chart = segmentation.GetNodeReference("GliomaSuite.survival.chart")
        self.assertEqual(chart.GetNumberOfPlotSeriesNodes(), 5)
        self.assertEqual(slicer.app.layoutManager().layout, SURVIVAL_LAYOUT_ID)
        self.assertTrue(widget.logic.survivalLogic.isFollowing(segmentation))

        # An edit: the panel waits for the burst to end, then estimates again with the same age.
        curve = segmentation.GetNodeReference("GliomaSuite.survival.curveTable")
        before = slicer.util.arrayFromTableColumn(curve, "Survival").copy()
        slicer.vtkSlicerSegmentationsModuleLogic.ClearSegment(segmentation, "ED")
        widget.survivalTimer.stop()
        widget.onSurvivalTimer()
        self.assertIn("Updated after your edit", widget.ui.survivalStatusLabel.text)
        self.assertFalse(np.array_equal(slicer.util.arrayFromTableColumn(curve, "Survival"), before))
        self.delayDisplay(_("Survival tab works"))

    def test_FollowupTab(self):
        """Two label maps a reader drew, compared in the background through PythonSlicer: the growing
        tumour is progression until the reader measures it as it was."""
        self.delayDisplay(_("Comparing two time points in the background"))
        nodes, labels = self._syntheticStudy()
        grown = labels.copy()
        k, j, i = np.indices(labels.shape)
        grown[((k - 32) ** 2 + (j - 40) ** 2 + (i - 58) ** 2 < 12 ** 2) & (labels != NCR)] = ET
        masks = []
        for name, array in (("SelfTest_before_seg", labels), ("SelfTest_after_seg", grown)):
            mask = slicer.util.addVolumeFromArray(array, name=name, nodeClassName="vtkMRMLLabelMapVolumeNode")
            mask.CopyOrientation(nodes["t1ce"])
            masks.append(mask)
        followupLogic = GliomaSuiteLogic().followupLogic
        followupLogic.startFollowup([TimePointInput(mask=masks[0], date="2024-01-10"),
                                     TimePointInput(mask=masks[1], date="2024-04-02")], labels="brats2021")
        outcome = followupLogic.waitForCompletion(timeout=300)
        self.assertEqual(outcome.state, DONE, outcome.errorMessage)
        self.assertEqual(followupLogic.response()["category"], "PD")
        self.assertEqual(outcome.nodes.browserNode.GetNumberOfItems(), 2)
        baseline = outcome.result["timepoints"][0]["lesions"][0]
        later = outcome.result["timepoints"][1]["lesions"][0]
        for role in ("long", "short"):  # the reader measures the later lesion as it was at baseline
            line = outcome.nodes.lines(outcome.result["timepoints"][1]["label"], later["track_id"], role)[0]
            start = np.array(line.GetNthControlPointPositionWorld(0))
            end = np.array(line.GetNthControlPointPositionWorld(1))
            end = start + (end - start) / np.linalg.norm(end - start) * baseline["diameters"][f"{role}_mm"]
            line.SetNthControlPointPositionWorld(1, *end)
        self.assertEqual(followupLogic.response()["category"], "SD")
        followupLogic.cleanup()
        self.delayDisplay(_("Follow-up tab works"))

    def test_SegmentRun(self):
        """Segment in the background with the shipped model, through PythonSlicer (plumbing only)."""
        if importlib.util.find_spec("torch") is None or importlib.util.find_spec("monai") is None:
            logging.info("Segment run not checked: PyTorch or MONAI is not installed in this Slicer")
            return
        from gliomasuite.segmentation import inference

        if not inference.REGISTRY.exists() or inference.DEFAULT_MODEL not in inference.registry().get("models", {}):
            logging.info("Segment run not checked: the shipped model is not installed")
            return
        self.delayDisplay(_("Segmenting a synthetic study in the background"))
        nodes, _labels = self._syntheticStudy()
        outcome = GliomaSuiteLogic().segment(nodes, device="cpu")
        self.assertEqual(outcome.state, DONE, outcome.errorMessage)
        self.assertEqual(outcome.segmentationNode.GetSegmentation().GetNumberOfSegments(), 3)
        self.delayDisplay(_("Segmentation ran in {seconds:.0f} s").format(seconds=outcome.seconds))
