"""The Report section's Qt panel: an output folder, options, Export report (Cancel while it runs).

Every decision is :class:`GliomaSuiteLib.ReportLogic.ReportLogic`'s (and the core's ``gliomasuite
report``); this panel gathers the Segment inputs, the segmentation, the survival estimate and the
Follow-up tab's current follow-up, and shows the outcome.
"""

import logging
from pathlib import Path

import ctk
import qt
import slicer
from slicer.i18n import tr as _

from gliomasuite.errors import GliomaSuiteError
from GliomaSuiteLib.FollowupLogic import FOLLOWUP_ATTRIBUTE
from GliomaSuiteLib.Process import CANCELLED, DONE
from GliomaSuiteLib.ReportLogic import ReportLogic, ReportOutcome, describeInputs


class ReportPanel:
    POLL_INTERVAL_MS = 200

    def __init__(self, container, placeholder, moduleLogic, parameterNode):
        """``parameterNode()`` returns the module's parameter node (Segment inputs, segmentation, age)."""
        self.moduleLogic = moduleLogic
        self.logic = ReportLogic(slicer.mrmlScene)
        self.parameterNode = parameterNode
        placeholder.hide()
        layout = container.layout()
        form = qt.QFormLayout()
        self.folderEdit = ctk.ctkPathLineEdit()
        self.folderEdit.filters = ctk.ctkPathLineEdit.Dirs
        self.folderEdit.toolTip = _("An empty folder for report.pdf, report.json, report.csv and figures/.")
        form.addRow(_("Output folder:"), self.folderEdit)
        self.survivalCheckBox = qt.QCheckBox(_("Include the survival estimate (needs the age in Survival)"))
        self.survivalCheckBox.checked = True
        form.addRow(self.survivalCheckBox)
        self.followupCheckBox = qt.QCheckBox(_("Include the follow-up shown in the Follow-up section"))
        self.followupCheckBox.checked = True
        form.addRow(self.followupCheckBox)
        self.deidentifyCheckBox = qt.QCheckBox(_("De-identify (no name, ID, birth or study dates)"))
        form.addRow(self.deidentifyCheckBox)
        layout.addLayout(form)
        self.exportButton = qt.QPushButton(_("Export report"))
        self.exportButton.toolTip = _("Write the PDF report and its JSON/CSV numbers from the scene as it is now "
                                      "(your segment edits included), in the background.")
        self.exportButton.connect("clicked(bool)", self.onExportButton)
        layout.addWidget(self.exportButton)
        self.progressBar = qt.QProgressBar()
        layout.addWidget(self.progressBar)
        self.statusLabel = qt.QLabel()
        self.statusLabel.wordWrap = True
        layout.addWidget(self.statusLabel)
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(self.POLL_INTERVAL_MS)
        self.pollTimer.connect("timeout()", self.onPollTimer)

    def close(self):
        self.pollTimer.stop()
        self.logic.cancel()

    def onExportButton(self):
        if self.logic.isRunning:
            self.logic.cancel()
            return
        p = self.parameterNode()
        inputs = {"t1": p.t1, "t1ce": p.t1ce, "t2": p.t2, "flair": p.flair}
        survival = followup = folder = None
        age = p.age or None
        try:
            if self.survivalCheckBox.checked and age and p.segmentation is not None:
                survival = self.moduleLogic.survivalLogic.score(p.segmentation, age, referenceVolume=p.t1ce)
            followupLogic = self.moduleLogic.followupLogic
            if self.followupCheckBox.checked and followupLogic.currentBrowser is not None:
                followup = followupLogic.result()
                folder = followupLogic.currentBrowser.GetAttribute(FOLLOWUP_ATTRIBUTE)
            self.logic.startReport(inputs, p.segmentation, Path(self.folderEdit.currentPath or "."),
                                   survivalResult=survival, followupResult=followup, followupFolder=folder, age=age,
                                   deidentify=self.deidentifyCheckBox.checked, onProgress=self.onProgress,
                                   onFinished=self.onFinished)
        except GliomaSuiteError as error:
            self.statusLabel.text = _("Not exported: {message}").format(message=error)
            return
        self.statusLabel.text = _("Writing the report of {inputs}...").format(inputs=describeInputs(inputs))
        self.exportButton.text = _("Cancel")
        self.pollTimer.start()

    def onPollTimer(self):
        try:
            running = self.logic.poll()
        except Exception:
            logging.exception("GliomaSuite: report polling failed")
            running = False
        if not running:
            self.pollTimer.stop()

    def onProgress(self, fraction: float, message: str):
        self.progressBar.value = int(round(100 * fraction))
        self.statusLabel.text = message

    def onFinished(self, outcome: ReportOutcome):
        self.exportButton.text = _("Export report")
        self.progressBar.value = 100 if outcome.state == DONE else 0
        if outcome.state == DONE:
            text = _("Report written: {pdf}").format(pdf=outcome.files.get("pdf", outcome.outputFolder))
            if "dicom_seg" in outcome.files:  # the T1ce came from Slicer's DICOM database
                text += "\n" + _("DICOM SEG and SR for the PACS: {seg}, {sr}").format(
                    seg=outcome.files["dicom_seg"], sr=outcome.files.get("dicom_sr", ""))
            if outcome.notes:
                text += "\n" + "\n".join(outcome.notes)
            self.statusLabel.text = text
        elif outcome.state == CANCELLED:
            self.statusLabel.text = _("Cancelled; nothing was written.")
        else:
            self.statusLabel.text = _("Not exported: {message}").format(message=outcome.errorMessage)
