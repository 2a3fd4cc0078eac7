"""Export report: the scene's study, its segmentation as the reader left it, the survival estimate and a
follow-up, written by the core's ``gliomasuite report`` in a background process (MRML only, no Qt).

Nothing here decides what the report says: the volumes are exported as they are in the scene (so a
reader's corrections are what the report measures), the survival result is the one
:class:`SurvivalLogic` computes for that segmentation, and the follow-up is the Follow-up tab's result
as the reader left it (dragged RANO lines included); the core renders them (``gliomasuite/report``).

Volumes that came from Slicer's DICOM database are given to the core as their DICOM series (see
:mod:`.DicomSource`), so the report then also holds a DICOM SEG and SR that reference them, for the PACS.
"""

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import SimpleITK as sitk

from gliomasuite.errors import GliomaSuiteError
from gliomasuite.modalities import MODALITIES, display_name

from .DicomSource import dicomSeriesFolders, slicerDicomDatabase
from .Process import CANCELLED, DONE, FAILED, BackgroundProcess, OneJobAtATime
from .SegmentationNodes import image_from_volume_node, image_on_volume_grid, labels_from_segmentation_node

@dataclass
class ReportOutcome:
    state: str                                   # "done", "failed" or "cancelled"
    outputFolder: Optional[Path] = None
    files: Dict[str, str] = field(default_factory=dict)   # what the core wrote: pdf, json, csv (, dicom_seg, dicom_sr)
    notes: List[str] = field(default_factory=list)
    errorMessage: str = ""


@dataclass
class _Job:
    workFolder: Path
    outputFolder: Path
    onFinished: Optional[Callable[[ReportOutcome], None]]
    notes: List[str] = field(default_factory=list)   # the logic's own, before the core's
    process: BackgroundProcess = None
    outcome: ReportOutcome = None


class ReportLogic(OneJobAtATime):
    """Writes a patient's report from the scene. ``python`` runs the core (see :func:`.Process.pythonExecutable`)."""

    def __init__(self, scene, python: Optional[str] = None):
        self.scene = scene
        self.python = python
        self.lastOutcome: Optional[ReportOutcome] = None
        self._job: Optional[_Job] = None

    def startReport(self, inputs: Dict[str, object], segmentationNode, outputFolder, survivalResult: Optional[dict] = None,
                    followupResult: Optional[dict] = None, followupFolder=None, age: Optional[float] = None,
                    deidentify: bool = False, overwrite: bool = False, dicomDatabase=None,
                    onProgress: Optional[Callable[[float, str], None]] = None,
                    onFinished: Optional[Callable[[ReportOutcome], None]] = None) -> BackgroundProcess:
        """Start writing the report into ``outputFolder`` and return at once.

        ``inputs`` {"t1ce": volume node, ...} (T1ce needed, its grid is the segmentation's); ``survivalResult``
        what :meth:`SurvivalLogic.score` returned for this segmentation; ``followupResult`` and
        ``followupFolder`` what :meth:`FollowupLogic.result` holds and the folder the follow-up was loaded from.
        ``dicomDatabase``: where volumes loaded from DICOM find their files (default: Slicer's DICOM database).
        """
        if self.isRunning:
            raise GliomaSuiteError("A report is already being written; wait for it to finish or cancel it first.")
        reference = inputs.get("t1ce")
        if reference is None:
            raise GliomaSuiteError("Choose the T1ce in the Segment section: the report's key slices and the "
                                   "segmentation's grid are the T1ce's.")
        if segmentationNode is None:
            raise GliomaSuiteError("There is no segmentation to report: run Segment, or choose the segmentation "
                                   "in the Segment section.")
        output = Path(outputFolder)
        if output.exists() and any(output.iterdir()) and not overwrite:
            raise GliomaSuiteError(f"{output} is not empty; choose an empty folder, or allow replacing the report "
                                   "there.")
        if followupResult is not None and followupFolder is None:
            raise GliomaSuiteError("The follow-up has no folder on disk to take its figure and images from; load it "
                                   "from its folder in the Follow-up tab.")
        work = Path(tempfile.mkdtemp(prefix="GliomaSuite-report-"))
        try:
            arguments = ["report"]
            database = dicomDatabase if dicomDatabase is not None else slicerDicomDatabase()
            series, dicomNotes = dicomSeriesFolders({m: inputs.get(m) for m in MODALITIES}, database, work / "dicom")
            for modality in MODALITIES:
                node = inputs.get(modality)
                if modality in series:
                    arguments.append(str(series[modality]))
                elif node is not None:
                    path = work / f"study_{modality}.nrrd"
                    sitk.WriteImage(image_from_volume_node(node), str(path), False)
                    arguments.append(str(path))
            labels = labels_from_segmentation_node(segmentationNode, reference)
            seg = work / "segmentation.nii.gz"
            sitk.WriteImage(image_on_volume_grid(labels, reference), str(seg), True)
            arguments += ["--seg", str(seg), "-o", str(output)]
            if survivalResult is not None:
                from gliomasuite.survival.score import write_patient_result

                write_patient_result(dict(survivalResult), work / "survival")
                arguments += ["--survival", str(work / "survival")]
            if followupResult is not None:
                arguments += ["--followup", str(self._followupCopy(followupResult, Path(followupFolder), work))]
            if age is not None:
                arguments += ["--age", str(float(age))]
            if deidentify:
                arguments.append("--deidentify")
            if overwrite:
                arguments.append("--overwrite")
            job = _Job(work, output, onFinished, notes=[
                f"{why} The report used the scene's copy" + (", so it has no DICOM SEG or SR." if modality == "t1ce"
                                                             else ".") for modality, why in dicomNotes.items()])
            job.process = BackgroundProcess(arguments, onProgress=onProgress, onDone=self._onDone, onError=self._onError,
                                            onFinished=self._onFinished, python=self.python)
            self._job = job
            job.process.start()
        except BaseException:
            self._job = None
            shutil.rmtree(work, ignore_errors=True)
            raise
        return job.process

    @staticmethod
    def _followupCopy(result: dict, folder: Path, work: Path) -> Path:
        """The follow-up as the reader left it: the scene's followup.json beside the written figure."""
        target = work / "followup"
        target.mkdir()
        (target / "followup.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
        figure = folder / "followup.png"
        if figure.is_file():
            shutil.copyfile(figure, target / "followup.png")
        return target

    @staticmethod
    def _notes(job: _Job) -> List[str]:
        return job.notes + list(job.process.notes)

    def _onDone(self, result: dict) -> None:
        self._job.outcome = ReportOutcome(DONE, self._job.outputFolder,
                                          {k: v for k, v in result.items() if isinstance(v, str)},
                                          notes=self._notes(self._job))

    def _onError(self, message: str) -> None:
        self._job.outcome = ReportOutcome(FAILED, errorMessage=message, notes=self._notes(self._job))

    def _onFinished(self, state: str) -> None:
        job, self._job = self._job, None
        outcome = job.outcome or ReportOutcome(state, notes=self._notes(job))
        if state == CANCELLED:
            outcome.state = CANCELLED
        shutil.rmtree(job.workFolder, ignore_errors=True)
        self.lastOutcome = outcome
        if job.onFinished:
            job.onFinished(outcome)


def describeInputs(inputs: Dict[str, object]) -> str:
    """"T1ce 'case_t1ce', FLAIR 'case_flair'": what the report will be made of, for the panel."""
    return ", ".join(f"{display_name(m)} '{inputs[m].GetName()}'" for m in MODALITIES if inputs.get(m) is not None)
