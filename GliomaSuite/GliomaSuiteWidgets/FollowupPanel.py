"""The Follow-up tab: time points in, Compare in the background, the result shown by FollowupLogic.

Qt only where it must be: the rows of time points, the buttons and the progress; running, loading
and judging live in :class:`GliomaSuiteLib.FollowupLogic.FollowupLogic`.
"""

import logging
import traceback
from pathlib import Path

import ctk
import qt
import slicer
from slicer.i18n import tr as _

from gliomasuite.errors import GliomaSuiteError
from gliomasuite.modalities import MODALITIES, display_name
from GliomaSuiteLib.FollowupLogic import FollowupLogic, FollowupOutcome, TimePointInput
from GliomaSuiteLib.Process import CANCELLED, DONE


class FollowupPanel:
    """The Follow-up section: the time points, Compare (Cancel while it runs), its progress, the
    response in words, and the recurrence model's probability, where-next overlay and its limits.

    Built in code inside the .ui's Follow-up section. Every decision is FollowupLogic's; this class
    only turns the widgets into its inputs and its outcome into text.
    """

    POLL_INTERVAL_MS = 200
    FIRST_ROWS = 2
    LABEL_CONVENTIONS = ("auto", "brats2021", "brats2023", "post-treatment", "binary")

    def __init__(self, container, placeholder, moduleLogic):
        """``moduleLogic`` is the module's GliomaSuiteLogic; its ``followupLogic`` does the work."""
        self.moduleLogic = moduleLogic
        self.logic: FollowupLogic = moduleLogic.followupLogic
        self.logic.onResponseChanged = lambda browser, result: self._showResponse(browser)
        self.logic.onRemeasureError = lambda browser, message: setattr(self.statusLabel, "text", message)
        self.rows = []
        placeholder.hide()
        layout = container.layout()

        self.grid = qt.QGridLayout()
        for column, header in enumerate((_("Scan (folder or file)"), _("or T1ce volume"), _("Reader's mask"),
                                         _("Date"))):
            self.grid.addWidget(qt.QLabel(header), 0, column)
        layout.addLayout(self.grid)
        for _row in range(self.FIRST_ROWS):
            self.addRow()
        self.addButton = qt.QPushButton(_("Add time point"))
        self.addButton.connect("clicked(bool)", lambda checked: self.addRow())
        layout.addWidget(self.addButton)

        form = qt.QFormLayout()
        self.labelsComboBox = qt.QComboBox()
        for convention in self.LABEL_CONVENTIONS:
            self.labelsComboBox.addItem(convention)
        self.labelsComboBox.toolTip = _("Label values of the readers' label maps (auto: read from the values; a "
                                        "segmentation node is always BraTS 2021).")
        form.addRow(_("Mask labels:"), self.labelsComboBox)
        self.modalityComboBox = qt.QComboBox()
        self.modalityComboBox.addItem(_("as its name says"), "")
        for modality in MODALITIES:
            self.modalityComboBox.addItem(display_name(modality), modality)
        self.modalityComboBox.toolTip = _("What a time point given as one image file is, when its name does not say.")
        form.addRow(_("Single image file:"), self.modalityComboBox)
        layout.addLayout(form)

        buttons = qt.QHBoxLayout()
        self.compareButton = qt.QPushButton(_("Compare"))
        self.compareButton.toolTip = _("Register the time points to the baseline, segment those without a mask, and "
                                       "judge the response (RANO 2.0) in the background.")
        self.compareButton.connect("clicked(bool)", self.onCompareButton)
        self.loadButton = qt.QPushButton(_("Load results folder..."))
        self.loadButton.toolTip = _("Show a follow-up written earlier (a folder with followup.json).")
        self.loadButton.connect("clicked(bool)", self.onLoadButton)
        buttons.addWidget(self.compareButton)
        buttons.addWidget(self.loadButton)
        layout.addLayout(buttons)
        self.progressBar = qt.QProgressBar()
        layout.addWidget(self.progressBar)
        self.statusLabel = qt.QLabel()
        self.statusLabel.wordWrap = True
        layout.addWidget(self.statusLabel)
        self.responseLabel = qt.QLabel()
        self.responseLabel.wordWrap = True
        self.responseLabel.setStyleSheet("font-weight: bold")
        layout.addWidget(self.responseLabel)
        recurrenceBox = qt.QGroupBox(_("Recurrence"))
        recurrenceLayout = qt.QVBoxLayout(recurrenceBox)
        self.recurrenceLabel = qt.QLabel(_("Compare at least two dated time points with a T1ce: a recurrent U-Net "
                                           "gives P(recurrence) for the latest scan and a map of where tumour is "
                                           "expected at the next visit."))
        self.recurrenceLabel.wordWrap = True
        recurrenceLayout.addWidget(self.recurrenceLabel)
        recurrenceButtons = qt.QHBoxLayout()
        self.mapCheckBox = qt.QCheckBox(_("Show the where-next map"))
        self.mapCheckBox.toolTip = _("Overlay P(tumour at the next visit) on the slice views (yellow low, red high; "
                                     "below 0.1 not drawn), with its colour legend.")
        self.mapCheckBox.enabled = False
        self.mapCheckBox.connect("toggled(bool)", self.onShowMap)
        recurrenceButtons.addWidget(self.mapCheckBox)
        self.limitsButton = qt.QPushButton(_("Model limits..."))
        self.limitsButton.toolTip = _("The recurrence model's card: trained on simulations, how it was checked, "
                                      "what it cannot do.")
        self.limitsButton.enabled = False
        self.limitsButton.connect("clicked()", self.onShowLimits)
        recurrenceButtons.addWidget(self.limitsButton)
        recurrenceLayout.addLayout(recurrenceButtons)
        layout.addWidget(recurrenceBox)

        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(self.POLL_INTERVAL_MS)
        self.pollTimer.connect("timeout()", self.onPollTimer)
        self._importTag = slicer.mrmlScene.AddObserver(slicer.mrmlScene.EndImportEvent,
                                                       lambda caller, event: self.refresh())

    def addRow(self):
        row = len(self.rows) + 1
        path = ctk.ctkPathLineEdit()
        path.filters = ctk.ctkPathLineEdit.Dirs | ctk.ctkPathLineEdit.Files | ctk.ctkPathLineEdit.Readable
        path.toolTip = _("A study folder (the four sequences, or DICOM), one image file, or the reader's label map "
                         "alone (a file whose name says seg, mask or label).")
        volume = self._nodeSelector(["vtkMRMLScalarVolumeNode"], False,
                                    _("A T1ce volume in the scene, with the reader's mask beside it."))
        mask = self._nodeSelector(["vtkMRMLSegmentationNode", "vtkMRMLLabelMapVolumeNode"], True,
                                  _("The reader's segmentation or label map of this scan (optional: without it the "
                                    "scan is segmented)."))
        date = qt.QLineEdit()
        date.placeholderText = "YYYY-MM-DD"
        for column, widget in enumerate((path, volume, mask, date)):
            self.grid.addWidget(widget, row, column)
        self.rows.append((path, volume, mask, date))

    @staticmethod
    def _nodeSelector(nodeTypes, showChildNodeTypes, toolTip):
        selector = slicer.qMRMLNodeComboBox()
        selector.nodeTypes = nodeTypes
        selector.showChildNodeTypes = showChildNodeTypes
        selector.noneEnabled = True
        selector.addEnabled = False
        selector.removeEnabled = False
        selector.toolTip = toolTip
        selector.setMRMLScene(slicer.mrmlScene)
        return selector

    def timepoints(self) -> list:
        """The rows the user filled in, as the logic's time points (empty rows left out)."""
        timepoints = []
        for path, volume, mask, date in self.rows:
            images = path.currentPath.strip() or ({"t1ce": volume.currentNode()} if volume.currentNode() else None)
            if images is None and mask.currentNode() is None:
                continue
            timepoints.append(TimePointInput(images, mask=mask.currentNode(), date=date.text.strip() or None))
        return timepoints

    def onCompareButton(self):
        if self.logic.isRunning:
            self.logic.cancel()
            self.compareButton.enabled = False
            self.statusLabel.text = _("Cancelling...")
            return
        timepoints = self.timepoints()
        self.progressBar.value = 0
        self.statusLabel.text = _("Starting...")
        try:
            with slicer.util.WaitCursor():
                if self.logic.needsSegmentationModel(timepoints):
                    self.moduleLogic.ensureDependencies()
                self.logic.startFollowup(timepoints, labels=self.labelsComboBox.currentText,
                                         modality=self.modalityComboBox.currentData or None,
                                         onProgress=self.onProgress, onFinished=self.onFinished)
        except GliomaSuiteError as error:
            self.statusLabel.text = ""
            slicer.util.errorDisplay(str(error), windowTitle=_("GliomaSuite"))
            return
        except Exception as error:
            self.statusLabel.text = ""
            logging.exception("GliomaSuite: Compare could not start")
            slicer.util.errorDisplay(_("Compare could not start: {error}").format(error=error),
                                     windowTitle=_("GliomaSuite"), detailedText=traceback.format_exc())
            return
        self._updateButtons()
        self.pollTimer.start()

    def onPollTimer(self):
        try:
            running = self.logic.poll()
        except Exception as error:  # a fault in our callbacks: stop cleanly and say so
            self.pollTimer.stop()
            self.logic.cancel()
            logging.exception("GliomaSuite: handling the follow-up's progress failed")
            slicer.util.errorDisplay(_("Follow-up stopped: {error}").format(error=error),
                                     windowTitle=_("GliomaSuite"), detailedText=traceback.format_exc())
            self._updateButtons()
            return
        if not running and not self.logic.isRunning:
            self.pollTimer.stop()
            self._updateButtons()

    def onProgress(self, fraction: float, message: str):
        self.progressBar.value = int(round(100 * fraction))
        self.statusLabel.text = message

    def onFinished(self, outcome: FollowupOutcome):
        self.pollTimer.stop()
        self._updateButtons()
        if outcome.state == DONE:
            self.progressBar.value = 100
            self.statusLabel.text = _("Done in {seconds:.0f} s; results in {folder}. Step through the time points with "
                                      "the sequence browser; drag a RANO line's end to measure a lesion again.").format(
                seconds=outcome.seconds, folder=outcome.outputFolder)
            self._show(outcome.nodes)
        elif outcome.state == CANCELLED:
            self.progressBar.value = 0
            self.statusLabel.text = _("Cancelled; nothing was added to the scene.")
        else:
            self.progressBar.value = 0
            self.statusLabel.text = _("Follow-up failed (see the message).")
            slicer.util.errorDisplay(outcome.errorMessage, windowTitle=_("GliomaSuite"))

    def onLoadButton(self):
        folder = qt.QFileDialog.getExistingDirectory(None, _("Follow-up results folder"))
        if not folder:
            return
        try:
            with slicer.util.WaitCursor():
                nodes = self.logic.loadFollowup(folder, name=Path(folder).name)
        except GliomaSuiteError as error:
            slicer.util.errorDisplay(str(error), windowTitle=_("GliomaSuite"))
            return
        self.statusLabel.text = _("Loaded {folder}.").format(folder=folder)
        self._show(nodes)

    def refresh(self):
        """Take up the scene's latest follow-up (a loaded scene) if none is shown."""
        if self.logic.currentBrowser is None and self.logic.followups():
            try:
                self._show(self.logic.restoreFollowup(self.logic.followups()[-1]), layout=False)
            except GliomaSuiteError as error:
                self.statusLabel.text = str(error)
        elif self.logic.currentBrowser is None:
            self.responseLabel.text = ""

    def cleanup(self):
        self.pollTimer.stop()
        self.logic.cleanup()
        self.responseLabel.text = ""
        self._updateButtons()

    def close(self):
        """The module is going away: stop, and stop observing the scene."""
        self.cleanup()
        slicer.mrmlScene.RemoveObserver(self._importTag)

    def _show(self, nodes, layout: bool = True):
        self._showResponse(nodes.browserNode)
        if layout:
            self.moduleLogic.showFollowup(nodes)

    def _showResponse(self, browser):
        self.responseLabel.text = self.logic.responseSentence(browser)
        recurrence = self.logic.recurrence(browser)
        self.recurrenceLabel.text = recurrence.get("sentence") or ""
        hasMap = self.logic.recurrenceMapNode(browser) is not None
        self.mapCheckBox.enabled = hasMap
        self.limitsButton.enabled = self.logic.recurrenceModelCard(browser) is not None
        if hasMap:
            self.mapCheckBox.checked = True
            self.logic.showRecurrenceMap(browser, True)

    def onShowMap(self, show):
        if self.logic.currentBrowser is not None and self.logic.recurrenceMapNode() is not None:
            self.logic.showRecurrenceMap(None, bool(show))

    def onShowLimits(self):
        card = self.logic.recurrenceModelCard()
        if card is None or not card.is_file():
            return
        box = qt.QMessageBox(slicer.util.mainWindow())
        box.setWindowTitle(_("Recurrence model: what it is and its limits"))
        box.setText(self.logic.recurrence().get("limits") or "")
        box.setDetailedText(card.read_text(encoding="utf-8"))
        box.exec_()

    def _updateButtons(self):
        running = self.logic.isRunning
        self.compareButton.text = _("Cancel") if running else _("Compare")
        self.compareButton.enabled = True
        self.compareButton.toolTip = (_("Stop the comparison; the scene is left as it was.") if running else
                                      _("Register the time points to the baseline, segment those without a mask, and "
                                        "judge the response (RANO 2.0) in the background."))
        for widget in [self.addButton, self.loadButton] + [w for row in self.rows for w in row]:
            widget.enabled = not running


