"""The Follow-up tab's MRML logic: a patient's time points in, a browsable, measurable follow-up out.

What happens on Compare: each time point (a study folder or image file, or volumes already in the
scene, optionally with the reader's label map, and a date) goes to the core's ``gliomasuite
followup`` in a background process (:mod:`.Process`), which registers the scans to the baseline,
segments them, tracks the enhancing lesions, measures their RANO diameters and judges the response
(RANO 2.0). Its output folder (``followup.json`` and the images named there) is then loaded as:

* one sequence browser stepping through the time points, index = days from baseline (the time point
  number when dates are unknown), with a synchronised sequence of registered volumes per modality
  and one of segmentations (Necrotic core, Edema, Enhancing tumour, as the Segment tab makes them);
* a "change" segmentation, latest against previous time point: New enhancing tumour (in a lesion
  that is new), Grown (newly enhancing voxels elsewhere) and Shrunk (enhancing voxels lost);
* RANO lines (:mod:`.RanoLines`), two per measured lesion per time point, shown with their time
  point. Dragging an end measures the lesion again: the core's ``remeasure`` judges the response
  again from the lines' lengths and the tables follow;
* a table of volumes, sums of products and responses per time point, a chart of ET, TC and WT over
  time, and a results table whose first row is the response in words.

The follow-up's ``followup.json`` content lives on the logic and, as JSON text, in a text node that
the browser references, so a saved scene keeps the reader's measurements and
:meth:`FollowupLogic.restoreFollowup` picks a reloaded follow-up up again.

Usage::

    logic = FollowupLogic(slicer.mrmlScene)
    logic.startFollowup([TimePointInput("/data/pre", date="2024-01-10"),
                         TimePointInput({"t1ce": t1ceNode}, mask=segmentationNode, date="2024-04-02")],
                        onProgress=print)
    outcome = logic.waitForCompletion()        # the module's widget polls logic.poll() instead
    outcome.nodes.browserNode, logic.responseSentence()
    nodes = logic.loadFollowup("/results/followup-42")   # a follow-up written earlier

MRML only (no Qt), so it runs on a bare ``slicer-core`` scene as well as in Slicer.
"""

import json
import logging
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import numpy as np
import SimpleITK as sitk
import vtk

import slicer
from gliomasuite.errors import GliomaSuiteError
from gliomasuite.followup.lesions import find_lesions
from gliomasuite.followup.pipeline import SCHEMA_VERSION, enhancing_lesions, remeasure
from gliomasuite.labels import ET
from gliomasuite.modalities import MODALITIES, display_name

from . import RanoLines
from .Process import CANCELLED, DONE, FAILED, BackgroundProcess, OneJobAtATime
from .SegmentationNodes import (
    _vtk_image_from_array,
    _vtk_matrix_from_numpy,
    colour_table,
    ijk_to_ras_from_image,
    image_from_volume_node,
    image_on_volume_grid,
    labels_from_segmentation_node,
    read_result_image,
    segmentation_node_from_labels,
    show_in_slice_views,
    volume_node_from_image,
)
from .SegmentLogic import SegmentLogic, _referenceVolume

#: Attribute marking a sequence browser as a GliomaSuite follow-up; its value is the output folder.
FOLLOWUP_ATTRIBUTE = "GliomaSuite.followup"
#: Prefix of the node references from the browser to the follow-up's other nodes (role = prefix + key).
ROLE_PREFIX = "GliomaSuite.followup."
LINES_ROLE = ROLE_PREFIX + "ranoLine"  # one reference per RANO line
SEQUENCE_ROLE_PREFIX = ROLE_PREFIX + "sequence."  # + modality: its sequence of registered volumes
RECURRENCE_MAP_ROLE = ROLE_PREFIX + "recurrenceMap"
RECURRENCE_ATTRIBUTE = "GliomaSuite.recurrence"
RECURRENCE_COLOURS = "GliomaSuite recurrence probability"
RECURRENCE_SHOWN_FROM = 0.1
RECURRENCE_OPACITY = 0.5
#: Attribute of the change segmentation: its segments' volumes (JSON, cm3) and the two time points.
CHANGE_ATTRIBUTE = ROLE_PREFIX + "change"

FOLLOWUP_FILE = "followup.json"
#: Segments of the change segmentation: (ID, name, colour). New and Grown are voxels enhancing now
#: and not at the previous time point; Shrunk the reverse.
CHANGE_SEGMENTS = (
    ("New", "New enhancing tumour", (1.0, 0.0, 1.0)),
    ("Grown", "Grown", (1.0, 0.5, 0.0)),
    ("Shrunk", "Shrunk", (0.2, 0.6, 1.0)),
)
#: Regions charted over time, with their colours (ET as in the segmentation; TC and WT as BraTS
#: figures draw them).
CHART_REGIONS = (("ET", (1.0, 0.8, 0.0)), ("TC", (0.85, 0.1, 0.1)), ("WT", (0.1, 0.6, 0.2)))
REGIONS = ("NCR", "ED", "ET", "TC", "WT")
TIMEPOINT, SCAN, DATE, DAYS, SPD, RESPONSE = "Time point", "Scan", "Date", "Days", "SPD", "Response"
ITEM, VALUE = "Item", "Value"
#: Reader's label maps from segmentation nodes are written with BraTS 2021 values (1, 2, 4).
SEGMENTATION_NODE_LABELS = "brats2021"


@dataclass
class TimePointInput:
    """One scan date of the patient, as the Follow-up tab takes it.

    ``images``: a study folder, DICOM folder or image file (path), or the time point's volumes in
    the scene as {modality: volume node}; None for a time point given by its label map alone.
    ``mask``: the reader's label map (a file, a segmentation node or a label map volume node), or
    None to have the core segment the images. ``date``: YYYY-MM-DD, None when unknown (then no
    time point may have one, or the core says which lack it). ``label`` names a time point given
    as nodes (default TP1, TP2, ... by position); the core names one given as a path after its file
    or folder, and one given as a label map alone after that file (e.g. "TP2_seg").
    """

    images: Union[str, Path, Dict[str, object], None] = None
    mask: Union[str, Path, object, None] = None
    date: Optional[str] = None
    label: Optional[str] = None


@dataclass
class FollowupNodes:
    """The nodes that show one follow-up; the browser node names it."""

    browserNode: object
    segmentationSequence: object
    volumeSequences: Dict[str, object]           # modality -> sequence of registered volumes
    changeNode: object                           # latest vs previous time point
    lineNodes: List[object]                      # RANO lines, two per measured lesion per time point
    tableNode: object                            # one row per time point
    chartNode: object                            # ET, TC, WT over time
    resultsTableNode: object                     # the response and notes in words
    resultTextNode: object                       # followup.json as the reader has left it

    @property
    def segmentationNode(self):
        """The segmentation of the time point selected in the browser (the browser's proxy node)."""
        return self.browserNode.GetProxyNode(self.segmentationSequence)

    def volumeNode(self, modality: str):
        """The registered volume of ``modality`` at the selected time point (a proxy node), or None."""
        sequence = self.volumeSequences.get(modality)
        return self.browserNode.GetProxyNode(sequence) if sequence is not None else None

    def lines(self, timepoint: Optional[str] = None, trackId: Optional[int] = None,
              role: Optional[str] = None) -> List[object]:
        """RANO lines, optionally only those of one time point, lesion track and/or role."""
        found = []
        for line in self.lineNodes:
            identity = RanoLines.lineIdentity(line)
            if identity is None:
                continue
            if all(wanted is None or wanted == value for wanted, value in zip((timepoint, trackId, role), identity)):
                found.append(line)
        return found


@dataclass
class FollowupOutcome:
    """How one Compare run ended, and what it left in the scene."""

    state: str                                   # "done", "failed" or "cancelled"
    outputFolder: Optional[Path] = None          # where the core wrote the follow-up ("done" only)
    nodes: Optional[FollowupNodes] = None
    result: Optional[dict] = None                # followup.json's content
    notes: List[str] = field(default_factory=list)
    errorMessage: str = ""
    seconds: float = 0.0


@dataclass
class _Job:
    workFolder: Path
    outputFolder: Path
    removeOutputOnFailure: bool
    name: Optional[str]
    onFinished: Optional[Callable[[FollowupOutcome], None]]
    process: BackgroundProcess = None
    outcome: FollowupOutcome = None


@dataclass
class _Followup:
    """A follow-up in the scene that this logic keeps up to date."""

    nodes: FollowupNodes
    result: dict
    observations: list = field(default_factory=list)  # (node, tag)
    selectedItem: int = -1


class FollowupLogic(OneJobAtATime):
    """Runs Follow-up comparisons and keeps their results in the scene.

    ``scene`` is the MRML scene; ``python`` the interpreter that runs the core (default: see
    :func:`.Process.pythonExecutable`); ``model`` a segmentation model for time points without the
    reader's label map (default: the core's choice). ``onResponseChanged(browserNode, result)`` is
    called after a reader's edit of a RANO line changed the follow-up; ``onRemeasureError(browserNode,
    message)`` when one could not be taken into account.
    """

    def __init__(self, scene, appLogic=None, python: Optional[str] = None, model: Optional[str] = None):
        self.scene = scene
        self.appLogic = appLogic
        self.python = python
        self.model = model
        self.lastOutcome: Optional[FollowupOutcome] = None
        self.currentBrowser = None
        self.onResponseChanged: Optional[Callable[[object, dict], None]] = None
        self.onRemeasureError: Optional[Callable[[object, str], None]] = None
        self._job: Optional[_Job] = None
        self._followups: Dict[str, _Followup] = {}  # browser node ID -> follow-up
        self._segmentLogic = SegmentLogic(scene, appLogic)

    # --- running -----------------------------------------------------------------------------------

    @staticmethod
    def needsSegmentationModel(timepoints: List[TimePointInput]) -> bool:
        """Whether the core will segment a time point (images without the reader's mask), so PyTorch
        and a model must be installed first; label maps alone and masks need neither."""
        return any(tp.images is not None and tp.mask is None for tp in timepoints)

    def startFollowup(self, timepoints: List[TimePointInput], outputFolder=None, overwrite: bool = False,
                      name: Optional[str] = None, labels: Optional[str] = None, baseline: Optional[str] = None,
                      rtEnd: Optional[str] = None, idh: Optional[str] = None, registration: str = "rigid",
                      modality: Optional[str] = None, device: str = "auto",
                      onProgress: Optional[Callable[[float, str], None]] = None,
                      onNote: Optional[Callable[[str], None]] = None,
                      onFinished: Optional[Callable[[FollowupOutcome], None]] = None) -> BackgroundProcess:
        """Start comparing ``timepoints`` in the background and return at once.

        The core writes to ``outputFolder`` (new or empty, or ``overwrite``; by default a new
        temporary folder, kept afterwards since it holds the follow-up's files); on success the
        result is loaded (:meth:`loadFollowup`, nodes named after ``name``). ``labels`` is the
        convention of the reader's label maps (the core's ``--labels``; by default BraTS 2021 when
        every mask is a segmentation node, else detected by the core), ``modality`` what an image
        file given alone is; ``baseline``, ``rtEnd`` (YYYY-MM-DD), ``idh`` and ``registration`` go to
        the core as they are. Callbacks run in the thread that calls :meth:`poll` or
        :meth:`waitForCompletion`; ``onFinished`` always gets the :class:`FollowupOutcome`. Input the
        core refuses (one time point, two on one date, grids that differ) ends "failed" with the
        core's sentence in ``outcome.errorMessage``.
        """
        if self.isRunning:
            raise GliomaSuiteError("A follow-up comparison is already running; wait for it to finish or cancel it first.")
        if not timepoints:
            raise GliomaSuiteError("No time point is given: add the baseline scan and at least one later scan.")
        workFolder = Path(tempfile.mkdtemp(prefix="GliomaSuite-followup-inputs-"))
        if outputFolder is None:
            # A folder inside one of ours: the core stages its output beside the output folder.
            output, removeOutput = Path(tempfile.mkdtemp(prefix="GliomaSuite-followup-")) / "followup", True
        else:
            output, removeOutput = Path(outputFolder), False
        try:
            arguments = self._arguments(timepoints, workFolder, labels)
            arguments += ["-o", str(output), "--registration", registration, "--device", device]
            for option, value in (("--baseline", baseline), ("--rt-end", rtEnd), ("--idh", idh),
                                  ("--modality", modality), ("--model", self.model)):
                if value:
                    arguments += [option, str(value)]
            if overwrite:
                arguments.append("--overwrite")
            job = _Job(workFolder, output, removeOutput, name, onFinished)
            job.process = BackgroundProcess(
                arguments, onProgress=onProgress, onNote=onNote, onDone=self._onDone, onError=self._onError,
                onFinished=self._onFinished, python=self.python)
            job.process.start()
        except BaseException:
            shutil.rmtree(workFolder, ignore_errors=True)
            if removeOutput:
                shutil.rmtree(output.parent, ignore_errors=True)
            raise
        self._job = job
        return job.process

    def cleanup(self) -> None:
        """Cancel a running job and stop following the RANO lines (on module close or scene close)."""
        self._stopJob()
        for browserId in list(self._followups):
            self._forget(browserId)
        self.currentBrowser = None

    def _arguments(self, timepoints: List[TimePointInput], workFolder: Path, labels: Optional[str]) -> list:
        """The core's time point arguments, with time points given as nodes exported to ``workFolder``."""
        paths, masks, dates, maskKinds = [], [], [], set()
        for number, timepoint in enumerate(timepoints, start=1):
            label = (timepoint.label or f"TP{number}").replace("/", "_").replace("\\", "_")
            images = timepoint.images
            if isinstance(images, dict):
                path, reference = self._exportImages(images, workFolder / label, label), _referenceOf(images)
            elif images is not None:
                path, reference = Path(images), None
            else:
                path, reference = None, None
            mask, kind = self._exportMask(timepoint.mask, reference, workFolder, label, path is None)
            if kind:
                maskKinds.add(kind)
            if path is None:  # a label map alone is the time point itself
                if mask is None:
                    raise GliomaSuiteError(
                        f"Time point {number} has neither images nor a label map; give its scan (a folder, a file "
                        "or volumes) or the reader's label map.")
                path, mask = mask, None
            paths.append(str(path))
            masks.append(str(mask) if mask is not None else "-")
            dates.append(str(timepoint.date).strip() if timepoint.date else "-")
        arguments = ["followup", *paths]
        if any(mask != "-" for mask in masks):
            arguments += ["--seg", *masks]
        if any(date != "-" for date in dates):
            arguments += ["--dates", *dates]
        if labels is None:
            labels = SEGMENTATION_NODE_LABELS if maskKinds == {"segmentation"} else "auto"
        elif "segmentation" in maskKinds and labels not in ("auto", SEGMENTATION_NODE_LABELS):
            raise GliomaSuiteError(
                f"A segmentation node is written as a BraTS 2021 label map (1 necrotic core, 2 edema, 4 enhancing "
                f"tumour), so the label convention cannot be '{labels}'; choose brats2021, or give every reader's "
                "mask as a label map volume or file in that convention.")
        return arguments + ["--labels", labels]

    def _exportImages(self, images: Dict[str, object], folder: Path, label: str) -> Path:
        """Write a time point's volumes as <modality>.nrrd in ``folder`` (its name is the label)."""
        chosen = {modality: node for modality, node in images.items() if node is not None}
        if not chosen:
            raise GliomaSuiteError(f"Time point {label} has no volume selected; choose at least its T1ce.")
        folder.mkdir(parents=True, exist_ok=True)
        for modality, node in chosen.items():
            if modality not in MODALITIES:
                raise GliomaSuiteError(f"'{modality}' is not a sequence GliomaSuite knows; use one of "
                                       f"{', '.join(MODALITIES)}.")
            _checkVolume(node, f"{display_name(modality)} of {label}")
            # Uncompressed NRRD: exact geometry and quick to write and read (as the Segment tab does).
            sitk.WriteImage(image_from_volume_node(node), str(folder / f"{modality}.nrrd"), False)
        return folder

    def _exportMask(self, mask, reference, workFolder: Path, label: str, alone: bool):
        """(path of the reader's label map, kind) with a node written to ``workFolder``; (None, None) if none."""
        if mask is None:
            return None, None
        if isinstance(mask, (str, Path)):
            return Path(mask), "file"
        # The core takes a file given alone as a label map when its name says so ("_seg").
        path = workFolder / (f"{label}_seg.nrrd" if alone else f"{label}_mask.nrrd")
        if mask.IsA("vtkMRMLSegmentationNode"):
            grid = reference or _referenceVolume(mask)
            if grid is None:
                raise GliomaSuiteError(
                    f"The segmentation '{mask.GetName()}' of {label} names no volume it was drawn on; select its "
                    "volumes for this time point, or set its reference geometry in the Segmentations module.")
            labelImage = image_on_volume_grid(labels_from_segmentation_node(mask, grid), grid)
            sitk.WriteImage(labelImage, str(path), True)
            return path, "segmentation"
        _checkVolume(mask, f"label map of {label}")
        sitk.WriteImage(image_from_volume_node(mask), str(path), True)
        return path, "labelmap"

    def _onDone(self, summary: dict) -> None:
        job = self._job
        outcome = FollowupOutcome(DONE, outputFolder=job.outputFolder, notes=list(job.process.notes))
        job.outcome = outcome
        try:
            outcome.nodes = self.loadFollowup(job.outputFolder, name=job.name)
            outcome.result = self.result(outcome.nodes.browserNode)
        except GliomaSuiteError as error:
            outcome.state, outcome.errorMessage = FAILED, str(error)
        except Exception as error:  # a fault of ours: say so in words, keep the details in the log
            logging.exception("GliomaSuite: loading the follow-up failed")
            outcome.state = FAILED
            outcome.errorMessage = (
                f"The follow-up was written to {job.outputFolder}, but putting it into the scene failed ({error}); "
                "the details are in Slicer's log.")

    def _onError(self, message: str) -> None:
        self._job.outcome = FollowupOutcome(FAILED, errorMessage=message, notes=list(self._job.process.notes))

    def _onFinished(self, state: str) -> None:
        job, self._job = self._job, None
        outcome = job.outcome or FollowupOutcome(state, notes=list(job.process.notes))
        if state == CANCELLED:
            outcome.state = CANCELLED
        outcome.seconds = (job.process.endTime or 0.0) - (job.process.startTime or 0.0)
        shutil.rmtree(job.workFolder, ignore_errors=True)
        if outcome.state != DONE and job.removeOutputOnFailure:
            shutil.rmtree(job.outputFolder.parent, ignore_errors=True)
        self.lastOutcome = outcome
        if job.onFinished:
            job.onFinished(outcome)

    # --- loading -----------------------------------------------------------------------------------

    def loadFollowup(self, folder, name: Optional[str] = None) -> FollowupNodes:
        """Put a follow-up written by the core (its output folder) into the scene; returns its nodes.

        Nodes are named after ``name`` (default "Follow-up", made unique). The browser shows the
        latest time point first.
        """
        folder = Path(folder)
        result = readFollowup(folder)
        name = self.scene.GenerateUniqueName(name or "Follow-up")
        added = []

        def keep(node):
            added.append(node)
            return node

        try:
            nodes = self._buildNodes(folder, result, name, keep)
            if (result.get("recurrence") or {}).get("map"):
                self._addRecurrenceMap(folder, result, name, nodes.browserNode, keep)
            state = _Followup(nodes, result)
            self._persist(state)
            self._updateTables(state)
        except BaseException:
            for node in reversed(added):
                _removeNode(self.scene, node)
            raise
        self._followups[nodes.browserNode.GetID()] = state
        self.currentBrowser = nodes.browserNode
        self._observe(state)
        nodes.browserNode.SetSelectedItemNumber(len(result["timepoints"]) - 1)
        self._showSelectedTimePoint(state)
        return nodes

    def _buildNodes(self, folder: Path, result: dict, name: str, keep) -> FollowupNodes:
        scene, timepoints = self.scene, result["timepoints"]
        values = indexValues(result)
        dated = all(tp["days_from_baseline"] is not None for tp in timepoints)
        segmentationFiles = [_file(folder, tp, "segmentation") for tp in timepoints]
        labelImages = [_readImage(path) for path in segmentationFiles]

        # Every segmentation is on the baseline's grid; a volume on that grid gives them their geometry.
        reference = volume_node_from_image(scene, labelImages[0], scene.GenerateUniqueName("GliomaSuite grid"))
        try:
            segmentationSequence = keep(self._newSequence(f"{name} segmentation", dated))
            for tp, value, labelImage in zip(timepoints, values, labelImages):
                item = segmentation_node_from_labels(scene, labelImage, reference, f"{tp['label']} tumour")
                item.CreateClosedSurfaceRepresentation()  # each item carries its 3D surfaces
                segmentationSequence.SetDataNodeAtValue(item, value)
                _removeNode(scene, item)
            change = keep(self._changeNode(f"{name} change", result, labelImages, reference))
        finally:
            _removeNode(scene, reference)

        volumeSequences = {}
        for modality in MODALITIES:
            present = [(tp, value) for tp, value in zip(timepoints, values) if modality in tp.get("files", {})]
            if not present:
                continue
            sequence = keep(self._newSequence(f"{name} {display_name(modality)}", dated))
            for tp, value in present:
                item = volume_node_from_image(scene, _readImage(_file(folder, tp, modality)),
                                              f"{tp['label']} {display_name(modality)}")
                sequence.SetDataNodeAtValue(item, value)
                _removeNode(scene, item)
            volumeSequences[modality] = sequence

        browser = keep(scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{name} browser"))
        browser.SetAttribute(FOLLOWUP_ATTRIBUTE, str(folder))
        browser.SetAndObserveMasterSequenceNodeID(segmentationSequence.GetID())
        for sequence in volumeSequences.values():
            browser.AddSynchronizedSequenceNode(sequence)
            browser.SetMissingItemMode(sequence, browser.MissingItemDisplayHidden)  # a modality a scan lacks
        browser.SetSaveChanges(segmentationSequence, True)  # a reader's edits stay with their time point
        browser.SetSelectedItemNumber(0)
        proxy = browser.GetProxyNode(segmentationSequence)
        if proxy is not None:
            keep(proxy)
            self._segmentLogic.showSegmentsInThreeD(proxy)
        for sequence in volumeSequences.values():
            volume = browser.GetProxyNode(sequence)
            if volume is not None:
                keep(volume)
        browser.SetNodeReferenceID(ROLE_PREFIX + "change", change.GetID())
        for modality, sequence in volumeSequences.items():
            browser.SetNodeReferenceID(SEQUENCE_ROLE_PREFIX + modality, sequence.GetID())

        for tp in timepoints:
            for lesion in tp["lesions"]:
                if lesion.get("diameters"):
                    for line in RanoLines.addLinePair(scene, tp["label"], lesion):
                        keep(line)
                        browser.AddNodeReferenceID(LINES_ROLE, line.GetID())
        self._addTablesAndChart(browser, name, dated, keep)
        return self.followupNodes(browser)

    def _addTablesAndChart(self, browser, name: str, dated: bool, keep) -> None:
        """The result text node, the two tables and the chart of volumes over time (filled later)."""
        scene = self.scene

        def node(key, className, label):
            created = keep(scene.AddNewNodeByClass(className, scene.GenerateUniqueName(f"{name} {label}")))
            browser.SetNodeReferenceID(ROLE_PREFIX + key, created.GetID())
            return created

        node("result", "vtkMRMLTextNode", "result (followup.json)")
        table = node("table", "vtkMRMLTableNode", "volumes")
        node("resultsTable", "vtkMRMLTableNode", "response")
        chart = node("chart", "vtkMRMLPlotChartNode", "volumes chart")
        xColumn = DAYS if dated else SCAN
        for region, colour in CHART_REGIONS:
            series = node("series." + region, "vtkMRMLPlotSeriesNode", f"{region} volume")
            series.SetName(f"{region} ({_REGION_NAMES[region]})")
            series.SetAndObserveTableNodeID(table.GetID())
            series.SetXColumnName(xColumn)
            series.SetYColumnName(region)
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleSolid)
            series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
            series.SetMarkerSize(9.0)
            series.SetLineWidth(2.0)
            series.SetColor(*colour)
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
        chart.SetTitle(f"{name}: tumour volumes over time")
        chart.SetXAxisTitle("Days from baseline" if dated else "Time point (no dates given)")
        chart.SetYAxisTitle("Volume (cm3)")
        chart.SetLegendVisibility(True)
        chart.SetGridVisibility(True)

    def _newSequence(self, name: str, dated: bool):
        sequence = self.scene.AddNewNodeByClass("vtkMRMLSequenceNode", self.scene.GenerateUniqueName(name))
        sequence.SetIndexType(sequence.NumericIndex)
        sequence.SetIndexName("time" if dated else "time point")
        sequence.SetIndexUnit("days" if dated else "")
        return sequence

    def _changeNode(self, name: str, result: dict, labelImages: List[sitk.Image], reference):
        """The change segmentation of the latest time point against the one before it."""
        timepoints = result["timepoints"]
        before, now = (sitk.GetArrayFromImage(image) for image in labelImages[-2:])
        spacingZyx = np.asarray(labelImages[-1].GetSpacing(), dtype=float)[::-1]
        # The lesions of the latest time point, numbered as the core numbered them in followup.json.
        components, count = find_lesions(enhancing_lesions(now), spacingZyx)
        lesions = timepoints[-1]["lesions"]
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        if count != len(lesions) or any(sizes[lesion["label"]] != lesion["voxels"] for lesion in lesions):
            logging.warning("GliomaSuite: the lesions of %s do not match followup.json; newly enhancing voxels are all "
                            "shown as grown", timepoints[-1]["label"])
            lesions = []
        newLabels = [lesion["label"] for lesion in lesions if lesion["status"] == "new"]
        appeared = (now == ET) & (before != ET)
        inNewLesion = np.isin(components, newLabels)
        masks = {"New": appeared & inNewLesion, "Grown": appeared & ~inNewLesion, "Shrunk": (before == ET) & (now != ET)}
        values = np.zeros(now.shape, np.uint8)
        for value, (segmentId, _, _) in enumerate(CHANGE_SEGMENTS, start=1):
            values[masks[segmentId]] = value
        node = _segmentationFromValues(self.scene, values, labelImages[-1], self.scene.GenerateUniqueName(
            f"{name} {timepoints[-2]['label']} to {timepoints[-1]['label']}"))
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
        node.RemoveNodeReferenceIDs(node.GetReferenceImageGeometryReferenceRole())  # the grid node goes away
        voxelCm3 = float(np.prod(spacingZyx)) / 1000.0
        node.SetAttribute(CHANGE_ATTRIBUTE, json.dumps({
            "from": timepoints[-2]["label"], "to": timepoints[-1]["label"],
            "volumes_cm3": {segmentId: round(int(masks[segmentId].sum()) * voxelCm3, 3)
                            for segmentId, _, _ in CHANGE_SEGMENTS}}))
        self._segmentLogic.showSegmentsInThreeD(node)
        node.GetDisplayNode().SetVisibility(False)  # shown on request: it hides the time point's segments
        return node

    # --- follow-ups in the scene -------------------------------------------------------------------

    def followups(self) -> List[object]:
        """The browser nodes of the GliomaSuite follow-ups in the scene."""
        collection = self.scene.GetNodesByClass("vtkMRMLSequenceBrowserNode")
        browsers = [collection.GetItemAsObject(index) for index in range(collection.GetNumberOfItems())]
        return [browser for browser in browsers if browser.GetAttribute(FOLLOWUP_ATTRIBUTE) is not None]

    def followupNodes(self, browserNode=None) -> FollowupNodes:
        """The nodes of a follow-up (default: the current one), found from its browser node."""
        browser = self._browser(browserNode)

        def ref(key):
            return browser.GetNodeReference(ROLE_PREFIX + key)

        segmentationSequence = browser.GetMasterSequenceNode()
        volumeSequences = {modality: browser.GetNodeReference(SEQUENCE_ROLE_PREFIX + modality) for modality in MODALITIES}
        lines = [browser.GetNthNodeReference(LINES_ROLE, index)
                 for index in range(browser.GetNumberOfNodeReferences(LINES_ROLE))]
        return FollowupNodes(browser, segmentationSequence,
                             {modality: node for modality, node in volumeSequences.items() if node is not None},
                             ref("change"),
                             [line for line in lines if line is not None], ref("table"), ref("chart"),
                             ref("resultsTable"), ref("result"))

    def restoreFollowup(self, browserNode):
        """Take up a follow-up found in the scene (a reloaded scene): its result from its text node,
        the RANO lines followed again. Returns its nodes."""
        if browserNode.GetAttribute(FOLLOWUP_ATTRIBUTE) is None:
            raise GliomaSuiteError(f"'{browserNode.GetName()}' is not a GliomaSuite follow-up; load one with "
                                   "the Follow-up tab.")
        self._forget(browserNode.GetID())
        nodes = self.followupNodes(browserNode)
        if nodes.resultTextNode is None or not nodes.resultTextNode.GetText():
            raise GliomaSuiteError(f"The follow-up '{browserNode.GetName()}' lost its result node; load its folder "
                                   f"({browserNode.GetAttribute(FOLLOWUP_ATTRIBUTE)}) again.")
        try:
            result = json.loads(nodes.resultTextNode.GetText())
        except ValueError as error:
            raise GliomaSuiteError(f"The result node '{nodes.resultTextNode.GetName()}' is not valid JSON ({error}); "
                                   "load the follow-up folder again.") from error
        result = _checkedResult(result, nodes.resultTextNode.GetName())
        state = _Followup(nodes, result)
        self._followups[browserNode.GetID()] = state
        self.currentBrowser = browserNode
        self._observe(state)
        self._showSelectedTimePoint(state)
        return nodes

    def result(self, browserNode=None) -> dict:
        """The follow-up's ``followup.json`` content as it is now (the reader's edits included)."""
        return self._state(browserNode).result

    def response(self, browserNode=None) -> Optional[dict]:
        """The response of the latest scan (``followup.json``'s "response")."""
        return self.result(browserNode)["response"]

    def responseSentence(self, browserNode=None) -> str:
        response = self.response(browserNode)
        return response["sentence"] if response else "No scan after the baseline, so no response was judged."

    def recurrence(self, browserNode=None) -> dict:
        """What the recurrence model said (``followup.json``'s "recurrence"): ``probability`` (None with
        ``reasons`` when the model would not give one), ``threshold``, ``called``, ``sentence``, ``map``."""
        return dict(self.result(browserNode).get("recurrence") or {"available": False, "sentence": ""})

    def recurrenceAvailable(self, browserNode=None) -> bool:
        return bool(self.recurrence(browserNode).get("available"))

    def recurrenceMapNode(self, browserNode=None):
        """The volume of P(tumour at the next visit) on the baseline's grid, or None."""
        return self._browser(browserNode).GetNodeReference(RECURRENCE_MAP_ROLE)

    def recurrenceModelCard(self, browserNode=None) -> Optional[Path]:
        """The recurrence model's card (what it was trained on, how it was checked, its limits)."""
        from gliomasuite.registry import MODELS_DIR

        card = self.recurrence(browserNode).get("card")
        return MODELS_DIR / card if card else None

    def showRecurrenceMap(self, browserNode=None, show: bool = True, opacity: float = RECURRENCE_OPACITY) -> None:
        """Overlay the map on every slice view (foreground, over the registered scan), or take it off."""
        node = self.recurrenceMapNode(browserNode)
        if node is None:
            raise GliomaSuiteError("This follow-up has no recurrence map (the model did not run or found no T1ce).")
        show_in_slice_views(self.scene, node, show, opacity)
        legend = self.recurrenceLegendNode(browserNode)
        if legend is not None:
            legend.SetVisibility(show)

    def recurrenceLegendNode(self, browserNode=None):
        """The colour legend shown beside the map (a display node of the map volume), or None."""
        node = self.recurrenceMapNode(browserNode)
        for index in range(node.GetNumberOfDisplayNodes() if node is not None else 0):
            display = node.GetNthDisplayNode(index)
            if display is not None and display.IsA("vtkMRMLColorLegendDisplayNode"):
                return display
        return None

    def _addRecurrenceMap(self, folder: Path, result: dict, name: str, browser, keep) -> None:
        """The map as a volume with a probability colour scale and its legend, referenced by the browser."""
        image = _readImage(folder / result["recurrence"]["map"])
        node = keep(volume_node_from_image(self.scene, image, f"{name} P(tumour at next visit)"))
        node.SetAttribute(RECURRENCE_ATTRIBUTE, json.dumps({k: result["recurrence"].get(k) for k in
                                                            ("probability", "threshold", "called", "model", "card")}))
        display = node.GetDisplayNode()
        display.SetAndObserveColorNodeID(self._recurrenceColours().GetID())
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, 1.0)
        display.SetApplyThreshold(True)  # below 10 % the scan shows through untouched
        display.SetLowerThreshold(RECURRENCE_SHOWN_FROM)
        display.SetUpperThreshold(1.0)
        if not self.scene.IsNodeClassRegistered("vtkMRMLColorLegendDisplayNode"):  # Slicer's Colors module does this
            self.scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())
        legend = keep(self.scene.AddNewNodeByClass("vtkMRMLColorLegendDisplayNode", f"{name} recurrence legend"))
        legend.SetAndObservePrimaryDisplayNode(display)
        legend.SetTitleText("P(tumour at next visit)")
        legend.SetLabelFormat("%.1f")
        node.AddAndObserveDisplayNodeID(legend.GetID())
        browser.SetNodeReferenceID(RECURRENCE_MAP_ROLE, node.GetID())

    def _recurrenceColours(self):
        """One colour table in the scene, transparent-free yellow to red over 0..1 (made here: slicer-core ships
        no colour files)."""
        return colour_table(self.scene, RECURRENCE_COLOURS, lambda t: (1.0, 1.0 - 0.9 * t, 0.15 * (1 - t)))

    def changeVolumesCm3(self, browserNode=None) -> Dict[str, float]:
        """Volumes of the change segments ("New", "Grown", "Shrunk") as loaded, cm3."""
        change = self.followupNodes(browserNode).changeNode
        return json.loads(change.GetAttribute(CHANGE_ATTRIBUTE))["volumes_cm3"]

    # --- the reader's measurements -----------------------------------------------------------------

    def remeasureLesion(self, browserNode, timepoint: str, trackId: int) -> dict:
        """Judge the response again with the lengths of one lesion's two RANO lines as drawn now.

        Returns the follow-up's result (changed in place); the tables and the result node follow.
        Called by itself when a line's end is moved.
        """
        state = self._state(browserNode)
        lesion = _lesion(state.result, timepoint, trackId)
        lengths, ends = {}, {}
        for role in (RanoLines.LONG, RanoLines.SHORT):
            lines = state.nodes.lines(timepoint, trackId, role)
            length = RanoLines.lineLengthMm(lines[0]) if lines else None
            # A line the reader deleted keeps its last measurement.
            lengths[role] = length if length is not None else lesion["diameters"][f"{role}_mm"]
            # The saved result records where the reader drew the line (RAS back to LPS: same flip).
            ends[role] = [RanoLines.ras_from_lps(p).tolist() for p in RanoLines.lineEndsRas(lines[0])] \
                if length is not None else None
        remeasure(state.result, timepoint, trackId, lengths[RanoLines.LONG], lengths[RanoLines.SHORT],
                  ends[RanoLines.LONG], ends[RanoLines.SHORT])
        self._persist(state)
        self._updateTables(state)
        if self.onResponseChanged:
            self.onResponseChanged(state.nodes.browserNode, state.result)
        return state.result

    def selectedTimePoint(self, browserNode=None) -> dict:
        """The ``followup.json`` entry of the time point the browser shows."""
        state = self._state(browserNode)
        return state.result["timepoints"][state.nodes.browserNode.GetSelectedItemNumber()]

    # --- internals ---------------------------------------------------------------------------------

    def _browser(self, browserNode):
        browser = browserNode if browserNode is not None else self.currentBrowser
        if browser is None:
            raise GliomaSuiteError("No follow-up is loaded; run Compare or load a follow-up folder first.")
        return browser

    def _state(self, browserNode) -> _Followup:
        browser = self._browser(browserNode)
        state = self._followups.get(browser.GetID())
        if state is None or state.nodes.browserNode is not browser:
            self.restoreFollowup(browser)
            state = self._followups[browser.GetID()]
        return state

    def _observe(self, state: _Followup) -> None:
        browser = state.nodes.browserNode
        for line in state.nodes.lineNodes:
            tag = line.AddObserver(slicer.vtkMRMLMarkupsNode.PointModifiedEvent,
                                   lambda caller, event, browser=browser: self._onLineMoved(browser, caller))
            state.observations.append((line, tag))
        tag = browser.AddObserver(vtk.vtkCommand.ModifiedEvent,
                                  lambda caller, event: self._onBrowserModified(caller))
        state.observations.append((browser, tag))

    def _forget(self, browserId: str) -> None:
        state = self._followups.pop(browserId, None)
        if state:
            for node, tag in state.observations:
                node.RemoveObserver(tag)

    def _onLineMoved(self, browser, line) -> None:
        if line.GetScene() is None:
            return
        identity = RanoLines.lineIdentity(line)
        if identity is None:
            return
        timepoint, trackId, _ = identity
        try:
            self.remeasureLesion(browser, timepoint, trackId)
        except GliomaSuiteError as error:
            if self.onRemeasureError:
                self.onRemeasureError(browser, str(error))
            else:
                logging.warning("GliomaSuite: the response was not judged again: %s", error)

    def _onBrowserModified(self, browser) -> None:
        state = self._followups.get(browser.GetID())
        if state is not None and browser.GetSelectedItemNumber() != state.selectedItem:
            self._showSelectedTimePoint(state)

    def _showSelectedTimePoint(self, state: _Followup) -> None:
        """Show the RANO lines of the time point the browser shows, hide the others'."""
        index = state.nodes.browserNode.GetSelectedItemNumber()
        state.selectedItem = index
        timepoints = state.result["timepoints"]
        label = timepoints[index]["label"] if 0 <= index < len(timepoints) else None
        for line in state.nodes.lineNodes:
            identity = RanoLines.lineIdentity(line)
            display = line.GetDisplayNode()
            if identity is not None and display is not None:
                display.SetVisibility(identity[0] == label)

    def _persist(self, state: _Followup) -> None:
        state.nodes.resultTextNode.SetText(json.dumps(state.result, indent=1))

    def _updateTables(self, state: _Followup) -> None:
        result, nodes = state.result, state.nodes
        timepoints = result["timepoints"]
        responses = {entry["label"]: entry for entry in result.get("responses") or []}
        days = [math.nan if tp["days_from_baseline"] is None else float(tp["days_from_baseline"]) for tp in timepoints]
        columns = [
            (TIMEPOINT, [tp["label"] for tp in timepoints], "", "The time point, as the core named it"),
            (SCAN, [float(n) for n in range(1, len(timepoints) + 1)], "", "Position in date order (1 = first)"),
            (DATE, [tp["date"] or "" for tp in timepoints], "", "Scan date (empty when not given)"),
            (DAYS, days, "days", "Days from the baseline scan (NaN when dates are unknown)"),
        ]
        for region in REGIONS:
            columns.append((region, [float(tp["volumes_cm3"][region]) for tp in timepoints], "cm3",
                            f"Volume of {_REGION_NAMES[region]}, in the time point's own voxels"))
        columns.append((SPD, [float(tp["sum_of_products_mm2"]) for tp in timepoints], "mm2",
                        "Sum of products of perpendicular diameters of the measurable enhancing lesions"))
        columns.append((RESPONSE, [_responseCell(tp, responses.get(tp["label"])) for tp in timepoints], "",
                        "RANO 2.0 response (bidimensional) against the baseline and the nadir"))
        _fillTable(nodes.tableNode, columns)

        change = json.loads(nodes.changeNode.GetAttribute(CHANGE_ATTRIBUTE)) if nodes.changeNode else None
        rows = [("Response", self.responseSentence(nodes.browserNode))]
        response = result.get("response")
        if response:
            for method in ("bidimensional", "volumetric"):
                assessed = response[method]
                rows.append((f"{method.capitalize()} ({response['label']})", assessed["sentence"]))
        rows.append(("Baseline", result["baseline"]))
        if change:
            volumes = change["volumes_cm3"]
            rows.append((f"Change {change['from']} to {change['to']}",
                         f"new enhancing tumour {volumes['New']:.2f} cm3, grown {volumes['Grown']:.2f} cm3, "
                         f"shrunk {volumes['Shrunk']:.2f} cm3"))
        edited = [f"{tp['label']} lesion {lesion['track_id']}" for tp in timepoints for lesion in tp["lesions"]
                  if lesion.get("diameters") and lesion["diameters"].get("edited")]
        rows.append(("Measured by the reader", ", ".join(edited) or "none (all diameters as the core measured them)"))
        recurrence = result.get("recurrence") or {}
        rows.append(("Recurrence", recurrence.get("sentence") or "not available"))
        for note in result.get("notes") or []:
            rows.append(("Note", note))
        _fillTable(nodes.resultsTableNode, [(ITEM, [r[0] for r in rows], "", ""), (VALUE, [r[1] for r in rows], "", "")])


# --- reading ---------------------------------------------------------------------------------------

def readFollowup(folder) -> dict:
    """The ``followup.json`` of a follow-up output folder, checked to be one this version reads."""
    path = Path(folder) / FOLLOWUP_FILE
    if not path.is_file():
        raise GliomaSuiteError(f"{folder} has no {FOLLOWUP_FILE}; choose the folder that 'gliomasuite followup -o' "
                               "(or the Follow-up tab) wrote.")
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise GliomaSuiteError(f"{path} could not be read ({error}); run the follow-up again.") from error
    return _checkedResult(result, str(path))


def indexValues(result: dict) -> List[str]:
    """The browser's index value of each time point: days from baseline when every date is known,
    else the time point's number in date order (1 = first)."""
    timepoints = result["timepoints"]
    if all(tp["days_from_baseline"] is not None for tp in timepoints):
        return [str(int(tp["days_from_baseline"])) for tp in timepoints]
    return [str(number) for number in range(1, len(timepoints) + 1)]


def _checkedResult(result, where: str) -> dict:
    if not isinstance(result, dict) or not isinstance(result.get("timepoints"), list):
        raise GliomaSuiteError(f"{where} is not a GliomaSuite follow-up (no time points); run the follow-up again.")
    version = result.get("schema_version")
    if version is None or version > SCHEMA_VERSION:
        raise GliomaSuiteError(f"{where} was written by another GliomaSuite version (follow-up format {version}, this "
                               f"one reads {SCHEMA_VERSION}); update GliomaSuite or run the follow-up again.")
    if len(result["timepoints"]) < 2:
        raise GliomaSuiteError(f"{where} holds {len(result['timepoints'])} time point(s); a follow-up has at least two.")
    return result


def _file(folder: Path, timepoint: dict, key: str) -> Path:
    relative = (timepoint.get("files") or {}).get(key)
    if not relative:
        raise GliomaSuiteError(f"followup.json in {folder} names no {key} file for {timepoint['label']}; run the "
                               "follow-up again.")
    return folder / relative


def _readImage(path: Path) -> sitk.Image:
    return read_result_image(path, "the follow-up folder is incomplete, so run the follow-up again.")


def _lesion(result: dict, timepoint: str, trackId: int) -> dict:
    tp = next((t for t in result["timepoints"] if t["label"] == timepoint), None)
    lesion = next((les for les in (tp or {}).get("lesions", []) if les["track_id"] == trackId), None)
    if lesion is None or not lesion.get("diameters"):
        raise GliomaSuiteError(f"{timepoint} has no measured enhancing lesion {trackId} in this follow-up.")
    return lesion


def _responseCell(timepoint: dict, response: Optional[dict]) -> str:
    if timepoint["is_baseline"]:
        return "baseline"
    if response is None:
        return "before baseline" if timepoint.get("is_pre_baseline") else ""
    return response["category"] + (" (preliminary)" if response["preliminary"] else "")


# --- nodes -----------------------------------------------------------------------------------------

_REGION_NAMES = {"NCR": "necrotic core", "ED": "edema", "ET": "enhancing tumour",
                 "TC": "tumour core (NCR + ET)", "WT": "whole tumour (NCR + ED + ET)"}


def _referenceOf(images: Dict[str, object]):
    """The volume a reader's segmentation of these images is written on: the core's registration order."""
    for modality in ("t1ce", "t1", "flair", "t2"):
        if images.get(modality) is not None:
            return images[modality]
    return None


def _checkVolume(node, what: str) -> None:
    if node.GetImageData() is None:
        raise GliomaSuiteError(f"Volume '{node.GetName()}' ({what}) holds no image; load it again or choose another.")
    if node.GetParentTransformNode() is not None:
        raise GliomaSuiteError(
            f"Volume '{node.GetName()}' ({what}) is under the transform '{node.GetParentTransformNode().GetName()}'; "
            "harden it (Data module: right-click, Harden transform) or remove it, so the comparison sees the images "
            "where you see them.")


def _segmentationFromValues(scene, values: np.ndarray, grid: sitk.Image, name: str):
    """A segmentation with the CHANGE_SEGMENTS (label values 1, 2, 3 of ``values``, on ``grid``)."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    segmentation = node.GetSegmentation()
    binary = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    segmentation.SetSourceRepresentationName(binary)
    labelmap = _vtk_image_from_array(np.ascontiguousarray(values, dtype=np.uint8), slicer.vtkOrientedImageData)
    labelmap.SetImageToWorldMatrix(_vtk_matrix_from_numpy(ijk_to_ras_from_image(grid)))
    for value, (segmentId, segmentName, colour) in enumerate(CHANGE_SEGMENTS, start=1):
        segment = slicer.vtkSegment()
        segment.SetName(segmentName)
        segment.SetNameAutoGenerated(False)
        segment.SetColor(*colour)
        segment.SetColorAutoGenerated(False)
        segment.SetLabelValue(value)
        segment.AddRepresentation(binary, labelmap)
        segmentation.AddSegment(segment, segmentId)
    return node


def _removeNode(scene, node) -> None:
    """Remove a node with the display and storage nodes it made (RemoveNode alone leaves them behind)."""
    if node is None or node.GetScene() is not scene:
        return
    companions = []
    if node.IsA("vtkMRMLDisplayableNode"):
        companions += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    if node.IsA("vtkMRMLStorableNode"):
        companions += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    scene.RemoveNode(node)
    for companion in companions:
        if companion is not None and companion.GetScene() is scene:
            scene.RemoveNode(companion)


def _fillTable(table, columns) -> None:
    """Replace a table node's columns with (name, values, unit, description): text columns for
    values that are strings, numeric ones otherwise."""
    wasModifying = table.StartModify()
    table.SetLocked(True)  # computed values: move the lines or edit the segments, not the numbers
    table.RemoveAllColumns()
    for name, values, unit, description in columns:
        if values and isinstance(values[0], str):
            array = vtk.vtkStringArray()
            for value in values:
                array.InsertNextValue(value)
        else:
            array = vtk.vtkDoubleArray()
            for value in values:
                array.InsertNextValue(float(value))
        array.SetName(name)
        table.AddColumn(array)
        if unit:
            table.SetColumnUnitLabel(name, unit)
        if description:
            table.SetColumnDescription(name, description)
    table.EndModify(wasModifying)
