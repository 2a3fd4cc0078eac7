"""The Segment tab's MRML logic: volumes in, editable tumour segments, a 3D view and a volume table out.

What happens on Segment: the four MRI volumes (found by their names, or chosen by the user) are
written to a work folder, the core segments them in a background process (:mod:`.Process`), and its
label map comes back as a segmentation node with the segments Necrotic core, Edema and Enhancing
tumour (:mod:`.SegmentationNodes`), shown in 3D as surfaces next to a volume rendering of the T1ce,
with a table of NCR, ED, ET, TC and WT volumes that follows the user's edits.

A segmentation the user has edited is never replaced: each result records a checksum of its voxels,
and a later run writes into that node only while the voxels still match (or when asked to overwrite);
otherwise the new result goes into a new node.

Usage::

    logic = SegmentLogic(slicer.mrmlScene, slicer.app.applicationLogic())
    inputs = logic.inputsFromNodeNames()                  # {"t1": node, "t1ce": node, ...}
    logic.startSegmentation(inputs, device="auto", tta=False, onProgress=print)
    outcome = logic.waitForCompletion()                   # the module's widget polls logic.poll() instead
    outcome.segmentationNode, outcome.tableNode, outcome.volumesCm3

MRML only (no Qt), so it runs on a bare ``slicer-core`` scene as well as in Slicer.
"""

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import SimpleITK as sitk
import vtk
from vtkmodules.util import numpy_support

import slicer
from gliomasuite.brain_check import what_to_do
from gliomasuite.errors import GliomaSuiteError
from gliomasuite.labels import SUBREGIONS, volumes_cm3
from gliomasuite.modalities import ALWAYS_NEEDED, MODALITIES, display_name, identify_text

from .DicomSource import linkToDicomSource
from .Process import CANCELLED, DONE, FAILED, MODULE_DIR, BackgroundProcess, OneJobAtATime
from .SegmentationNodes import (
    colour_table,
    image_from_volume_node,
    labels_from_segmentation_node,
    read_result_image,
    segmentation_node_from_labels,
    show_in_slice_views,
    volume_node_from_image,
)

#: Attribute of a result node: SHA-256 of its BraTS label map as loaded. Voxels that no longer match
#: it mean the user edited the segmentation.
CHECKSUM_ATTRIBUTE = "GliomaSuite.LabelMapSHA256"
#: Node reference from a segmentation to its volume table.
VOLUME_TABLE_ROLE = "GliomaSuite.volumeTable"

#: Rows of the volume table: BraTS sub-regions, then the evaluation regions built from them.
TABLE_ROWS = tuple((short, name) for _, short, name, _ in SUBREGIONS) + (
    ("TC", "Tumour core (NCR + ET)"),
    ("WT", "Whole tumour (NCR + ED + ET)"),
)
VOLUME_COLUMN = "Volume (cm3)"

#: 3D opacity of the edema surface: it encloses the rest, so it is see-through to show the core.
EDEMA_OPACITY_3D = 0.4

#: Volume rendering preset for a T1ce (Slicer's .vp format). MR intensities have no fixed scale, so
#: the preset's intensity axis runs from 0 (the volume's minimum) to PRESET_SCALE (the 99.5th
#: percentile of its voxels above the minimum) and is stretched onto each volume when applied.
#: Brain tissue is kept nearly transparent, so tumour surfaces inside it stay visible, while vessels
#: and enhancement (the brightest voxels) and tissue edges (gradient opacity) give the shape.
MR_PRESET_FILE = MODULE_DIR / "Resources" / "VolumeRendering" / "GliomaSuite-MR-T1ce.vp"
PRESET_SCALE = 1000.0
PRESET_UPPER_PERCENTILE = 99.5

#: Name of the label map the background process writes in the work folder.
LABELS_FILE = "labels.nrrd"
#: ... and of the uncertainty map, when asked for.
UNCERTAINTY_FILE = "uncertainty.nrrd"
#: Attribute of an uncertainty volume: JSON list of the regions most worth checking (the core's
#: ``uncertain_regions``); and the node reference from the segmentation to that volume.
UNCERTAIN_REGIONS_ATTRIBUTE = "GliomaSuite.uncertainRegions"
UNCERTAINTY_ROLE = "GliomaSuite.uncertainty"
UNCERTAINTY_COLOURS = "GliomaSuite uncertainty"
#: The map runs 0 (the passes agree) to 0.5 (they split evenly); below this the scan shows through.
UNCERTAINTY_SHOWN_FROM = 0.05
UNCERTAINTY_OPACITY = 0.6


@dataclass
class SegmentOutcome:
    """How one Segment run ended, and what it left in the scene."""

    state: str                                   # "done", "failed" or "cancelled"
    segmentationNode: object = None              # the node holding the result ("done" only)
    tableNode: object = None                     # its volume table
    volumesCm3: Dict[str, float] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)  # remarks for the user (resampling, kept edits)
    errorMessage: str = ""
    device: str = ""                             # "cpu" or "cuda", as the core reports it
    seconds: float = 0.0
    #: Why the core's brain check refused the volumes ("failed", scene untouched); the user may
    #: segment anyway (startSegmentation's skipBrainCheck).
    brainCheck: List[str] = field(default_factory=list)
    #: With ``uncertainty=True``: the uncertainty map's volume node and the regions most worth checking
    #: ("the edema (whole-tumour) boundary, left hemisphere, ...: 4.1 cm3 uncertain"), largest first.
    uncertaintyNode: object = None
    uncertainRegions: List[str] = field(default_factory=list)


@dataclass
class _Job:
    inputs: dict
    workFolder: Path
    removeWorkFolder: bool
    outputNode: object
    overwrite: bool
    onProgress: Optional[Callable[[float, str], None]]
    onNote: Optional[Callable[[str], None]]
    onFinished: Optional[Callable[[SegmentOutcome], None]]
    process: BackgroundProcess = None
    outcome: SegmentOutcome = None
    uncertainty: bool = False


class SegmentLogic(OneJobAtATime):
    """Runs Segment on volumes of an MRML scene and manages its results.

    ``scene`` is the MRML scene, ``appLogic`` Slicer's application logic (for the Volume Rendering
    module's logic). ``model`` is a registered model name or a weights file for the core (default:
    the shipped model); ``python`` the interpreter that runs the core (default: see
    :func:`.Process.pythonExecutable`).
    """

    def __init__(self, scene, appLogic=None, model: Optional[str] = None, python: Optional[str] = None):
        self.scene = scene
        self.appLogic = appLogic
        self.model = model
        self.python = python
        self.lastOutcome: Optional[SegmentOutcome] = None
        self._job: Optional[_Job] = None
        self._observedSegmentations = {}  # node ID -> (node, observer tags)
        self._tableUpdatesPaused = False
        self._presetProperty = None

    # --- inputs ------------------------------------------------------------------------------------

    def inputsFromNodeNames(self) -> Dict[str, object]:
        """The scalar volume of each modality, read from node names by the core loader's rules.

        A modality named by no volume, or by more than one (two patients loaded), maps to ``None``
        for the user to choose; label maps and segmentations are never inputs.
        """
        candidates = {modality: [] for modality in MODALITIES}
        for node in _nodesByClass(self.scene, "vtkMRMLScalarVolumeNode"):
            if node.GetClassName() != "vtkMRMLScalarVolumeNode":  # label maps, DWI, vectors
                continue
            modality = identify_text(node.GetName())
            if modality:
                candidates[modality].append(node)
        return {modality: nodes[0] if len(nodes) == 1 else None for modality, nodes in candidates.items()}

    def checkInputs(self, inputs: Dict[str, object]) -> None:
        """Raise :class:`GliomaSuiteError` with the fix if the inputs cannot be segmented as they are."""
        # T1ce and FLAIR are always needed. T1 and T2 may be left empty: the core then says whether
        # the model was trained to do without them, or which one it needs.
        missing = [display_name(m) for m in ALWAYS_NEEDED if inputs.get(m) is None]
        if missing:
            raise GliomaSuiteError(
                f"No volume is selected for {_join(missing)}. Choose one for each of T1ce and FLAIR (T1 and "
                "T2 are optional) in the Segment section (volumes whose names say the sequence, such as "
                "'case_t1ce', are chosen automatically).")
        chosenBy = {}
        for modality in MODALITIES:
            node = inputs.get(modality)
            if node is None:
                continue
            if node.GetID() in chosenBy:
                raise GliomaSuiteError(
                    f"Volume '{node.GetName()}' is selected as both {display_name(chosenBy[node.GetID()])} "
                    f"and {display_name(modality)}; choose a different volume for each sequence.")
            chosenBy[node.GetID()] = modality
            if node.GetImageData() is None:
                raise GliomaSuiteError(
                    f"Volume '{node.GetName()}' ({display_name(modality)}) holds no image; load the "
                    "image again or choose another volume.")
            if node.GetParentTransformNode() is not None:
                raise GliomaSuiteError(
                    f"Volume '{node.GetName()}' ({display_name(modality)}) is under the transform "
                    f"'{node.GetParentTransformNode().GetName()}'; harden it (Data module: right-click, "
                    "Harden transform) or remove it, so the model sees the images where you see them.")

    # --- running -----------------------------------------------------------------------------------

    def startSegmentation(self, inputs: Dict[str, object], device: str = "auto", tta: bool = False,
                          outputNode=None, overwrite: bool = False, workFolder=None, skipBrainCheck: bool = False,
                          uncertainty: bool = False,
                          onProgress: Optional[Callable[[float, str], None]] = None,
                          onNote: Optional[Callable[[str], None]] = None,
                          onFinished: Optional[Callable[[SegmentOutcome], None]] = None) -> BackgroundProcess:
        """Start segmenting ``inputs`` ({"t1": node, ...}) in the background and return at once.

        The result goes into ``outputNode`` if given and unedited (or ``overwrite``), else into a new
        segmentation node. ``workFolder`` keeps the exported volumes and the core's label map (by
        default a temporary folder, removed afterwards). The callbacks run in the thread that calls
        :meth:`poll` / :meth:`waitForCompletion`; ``onFinished`` always gets the :class:`SegmentOutcome`.
        Volumes that fail the core's brain check (not skull-stripped brain MRI, one volume chosen for
        two sequences) end "failed" with ``outcome.brainCheck`` saying why, and nothing is added to
        the scene; ``skipBrainCheck`` segments them anyway, for the user who knows better.
        ``uncertainty`` also loads the per-voxel uncertainty map (the core's ``--uncertainty``) as a volume
        overlaid on the slice views, and lists the regions most worth checking in ``outcome.uncertainRegions``.
        """
        if self.isRunning:
            raise GliomaSuiteError("A segmentation is already running; wait for it to finish or cancel it first.")
        self.checkInputs(inputs)
        if workFolder is None:
            folder, removeFolder = Path(tempfile.mkdtemp(prefix="GliomaSuite-")), True
        else:
            folder, removeFolder = Path(workFolder), False
            folder.mkdir(parents=True, exist_ok=True)
        job = _Job(dict(inputs), folder, removeFolder, outputNode, overwrite, onProgress, onNote, onFinished,
                   uncertainty=uncertainty)
        try:
            arguments = ["segment"]
            for modality in MODALITIES:
                if inputs.get(modality) is not None:
                    arguments += [f"--{modality}",
                                  str(self._exportVolume(inputs[modality], folder / f"{modality}.nrrd"))]
            arguments += ["-o", str(folder / LABELS_FILE), "--overwrite", "--device", device]
            if tta:
                arguments.append("--tta")
            if uncertainty:
                arguments += ["--uncertainty", str(folder / UNCERTAINTY_FILE)]
            if skipBrainCheck:
                arguments.append("--skip-brain-check")
            if self.model:
                arguments += ["--model", str(self.model)]
            job.process = BackgroundProcess(
                arguments, onProgress=onProgress, onNote=onNote, onDone=self._onDone,
                onError=self._onError, onFinished=self._onFinished, python=self.python)
            job.process.start()
        except BaseException:
            if removeFolder:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        self._job = job
        return job.process

    def cleanup(self) -> None:
        """Cancel a running job and stop following edits (on module close or scene close)."""
        self._stopJob()
        for node, tags in self._observedSegmentations.values():
            for tag in tags:
                node.RemoveObserver(tag)
        self._observedSegmentations.clear()

    def _exportVolume(self, volumeNode, path: Path) -> Path:
        # Uncompressed NRRD: exact geometry (float64 header) and quick to write and read.
        sitk.WriteImage(image_from_volume_node(volumeNode), str(path), False)
        return path

    def _onDone(self, result: dict) -> None:
        job = self._job
        outcome = SegmentOutcome(DONE, device=result.get("device", ""), notes=list(job.process.notes))
        job.outcome = outcome
        if result.get("brain_check"):  # the core did not segment: leave the scene (and any result in it) alone
            outcome.state, outcome.brainCheck = FAILED, list(result["brain_check"])
            outcome.errorMessage = (
                "These volumes were not segmented: " + "; ".join(outcome.brainCheck) + "." +
                what_to_do(outcome.brainCheck) + " Segment anyway only if they are skull-stripped brain MRI with "
                "each sequence in its place.")
            return
        try:
            outcome.segmentationNode, keptEdited = self._loadJobResult(job)
            outcome.tableNode = self.volumeTable(outcome.segmentationNode)
            outcome.volumesCm3 = self.volumesCm3(outcome.segmentationNode)
        except GliomaSuiteError as error:
            outcome.state, outcome.errorMessage = FAILED, str(error)
            return
        except Exception as error:  # a fault of ours: say so in words, keep the details in the log
            logging.exception("GliomaSuite: loading the segmentation result failed")
            outcome.state = FAILED
            outcome.errorMessage = (
                f"The segmentation finished, but putting its result into the scene failed ({error}); "
                "the details are in Slicer's log.")
            return
        if job.uncertainty and result.get("uncertainty"):
            try:
                outcome.uncertaintyNode = self.loadUncertainty(job.workFolder / UNCERTAINTY_FILE, outcome.segmentationNode,
                                                               result.get("uncertain_regions") or [])
                outcome.uncertainRegions = [r["sentence"] for r in result.get("uncertain_regions") or []]
            except GliomaSuiteError as error:  # the segments are there; the map is a bonus
                outcome.notes.append(str(error))
        if keptEdited is not None:
            outcome.notes.append(
                f"'{keptEdited.GetName()}' was edited since it was made, so it was kept as it is; "
                f"the new result is '{outcome.segmentationNode.GetName()}'.")
        try:
            self.showVolumeRendering(job.inputs["t1ce"])
        except GliomaSuiteError as error:  # the segments are there; the rendering is a bonus
            outcome.notes.append(str(error))

    def loadUncertainty(self, path, segmentationNode, regions: List[dict]):
        """The core's uncertainty map as a volume beside ``segmentationNode`` (referenced from it),
        coloured from clear to magenta over 0..0.5 and overlaid on the slice views."""
        image = read_result_image(path, "the uncertainty map is not shown; run Segment again to make it.")
        node = volume_node_from_image(self.scene, image, f"{segmentationNode.GetName()} uncertainty")
        node.SetAttribute(UNCERTAIN_REGIONS_ATTRIBUTE, json.dumps(regions))
        display = node.GetDisplayNode()
        display.SetAndObserveColorNodeID(colour_table(self.scene, UNCERTAINTY_COLOURS,
                                                      lambda t: (0.9 + 0.1 * t, 0.9 * (1 - t), 0.9)).GetID())
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, 0.5)
        display.SetApplyThreshold(True)
        display.SetLowerThreshold(UNCERTAINTY_SHOWN_FROM)
        display.SetUpperThreshold(1.0)
        segmentationNode.SetNodeReferenceID(UNCERTAINTY_ROLE, node.GetID())
        self.showUncertainty(segmentationNode)
        return node

    def uncertaintyNode(self, segmentationNode):
        """The uncertainty map loaded with ``segmentationNode``, or None."""
        return segmentationNode.GetNodeReference(UNCERTAINTY_ROLE) if segmentationNode is not None else None

    def uncertainRegions(self, segmentationNode) -> List[dict]:
        node = self.uncertaintyNode(segmentationNode)
        return json.loads(node.GetAttribute(UNCERTAIN_REGIONS_ATTRIBUTE) or "[]") if node is not None else []

    def showUncertainty(self, segmentationNode, show: bool = True, opacity: float = UNCERTAINTY_OPACITY) -> None:
        """Overlay the segmentation's uncertainty map on the slice views, or take it off."""
        node = self.uncertaintyNode(segmentationNode)
        if node is None and show:
            raise GliomaSuiteError("This segmentation has no uncertainty map; segment again with "
                                   "'Show where it is unsure' ticked.")
        show_in_slice_views(self.scene, node, show, opacity)

    def _loadJobResult(self, job: _Job):
        outputNode = job.outputNode
        if outputNode is not None and outputNode.GetScene() is not self.scene:
            outputNode = None  # deleted since the run started
        keptEdited = outputNode if outputNode is not None and not job.overwrite and self.isEdited(outputNode) else None
        node = self.loadResult(job.workFolder / LABELS_FILE, job.inputs["t1ce"], outputNode=outputNode,
                               overwrite=job.overwrite)
        return node, keptEdited

    def _onError(self, message: str) -> None:
        self._job.outcome = SegmentOutcome(FAILED, errorMessage=message, notes=list(self._job.process.notes))

    def _onFinished(self, state: str) -> None:
        job, self._job = self._job, None
        outcome = job.outcome or SegmentOutcome(state, notes=list(job.process.notes))
        if state == CANCELLED:
            outcome.state = CANCELLED
        outcome.seconds = (job.process.endTime or 0.0) - (job.process.startTime or 0.0)
        if job.removeWorkFolder:
            shutil.rmtree(job.workFolder, ignore_errors=True)
        self.lastOutcome = outcome
        if job.onFinished:
            job.onFinished(outcome)

    # --- results -----------------------------------------------------------------------------------

    def loadResult(self, labels, referenceNode, outputNode=None, overwrite: bool = False, name: Optional[str] = None):
        """Put a BraTS label map into the scene as an editable segmentation; returns its node.

        ``labels`` is a label map file or SimpleITK image on the grid of ``referenceNode`` (the
        T1ce). It goes into ``outputNode`` when that is given and unedited (or ``overwrite``), else into
        a new node named ``name`` (default "<reference name> tumour", made unique). The node is shown
        in 3D as surfaces and gets a volume table that follows later edits; on a T1ce loaded from
        Slicer's DICOM database it is filed for Slicer's DICOM export (:func:`.DicomSource.linkToDicomSource`).
        """
        if not isinstance(labels, sitk.Image):
            labels = read_result_image(labels, "the segmentation process may have been interrupted, so run "
                                               "Segment again.")
        if outputNode is not None and (overwrite or not self.isEdited(outputNode)):
            node = outputNode
            fresh = segmentation_node_from_labels(self.scene, labels, referenceNode, "GliomaSuite result")
            self._tableUpdatesPaused = True
            try:
                node.SetReferenceImageGeometryParameterFromVolumeNode(referenceNode)
                node.GetSegmentation().DeepCopy(fresh.GetSegmentation())
            finally:
                self._tableUpdatesPaused = False
                self.scene.RemoveNode(fresh)
        else:
            uniqueName = self.scene.GenerateUniqueName(name or f"{referenceNode.GetName()} tumour")
            node = segmentation_node_from_labels(self.scene, labels, referenceNode, uniqueName)
        node.SetAttribute(CHECKSUM_ATTRIBUTE, self._labelChecksum(node))
        linkToDicomSource(node, referenceNode)  # so Slicer's DICOM export offers it as a SEG of that series
        self.showSegmentsInThreeD(node)
        self.volumeTable(node)
        return node

    def isEdited(self, segmentationNode) -> bool:
        """Whether the voxels differ from the result as loaded. Nodes GliomaSuite did not make count
        as edited: they are the user's."""
        stored = segmentationNode.GetAttribute(CHECKSUM_ATTRIBUTE)
        if not stored or _referenceVolume(segmentationNode) is None:
            return True
        return self._labelChecksum(segmentationNode) != stored

    def _labelChecksum(self, segmentationNode) -> str:
        labels = labels_from_segmentation_node(segmentationNode, _referenceVolume(segmentationNode))
        digest = hashlib.sha256(str(labels.shape).encode())
        digest.update(np.ascontiguousarray(labels).tobytes())
        return digest.hexdigest()

    # --- volumes -----------------------------------------------------------------------------------

    def volumesCm3(self, segmentationNode) -> Dict[str, float]:
        """NCR, ED, ET, TC and WT volumes in cm^3 of a segmentation as it is now (edits included).

        Voxels are counted on the reference (T1ce) grid; where edited segments overlap, the inner
        region counts (see :func:`.SegmentationNodes.labels_from_segmentation_node`).
        """
        reference = _referenceVolume(segmentationNode)
        if reference is None:
            raise GliomaSuiteError(
                f"Segmentation '{segmentationNode.GetName()}' has no reference volume, so its voxels "
                "cannot be measured; set its reference geometry to the T1ce in the Segmentations module.")
        labels = labels_from_segmentation_node(segmentationNode, reference)
        volumes = volumes_cm3(labels, reference.GetSpacing())
        return {short: round(volumes[short], 3) for short, _ in TABLE_ROWS}

    def volumeTable(self, segmentationNode):
        """The segmentation's volume table node (made on first call), kept up to date with its edits."""
        table = segmentationNode.GetNodeReference(VOLUME_TABLE_ROLE)
        if table is None or table.GetScene() is not self.scene:
            table = self.scene.AddNewNodeByClass(
                "vtkMRMLTableNode", self.scene.GenerateUniqueName(f"{segmentationNode.GetName()} volumes"))
            segmentationNode.SetNodeReferenceID(VOLUME_TABLE_ROLE, table.GetID())
        self._followEdits(segmentationNode)
        self.updateVolumeTable(segmentationNode)
        return table

    def updateVolumeTable(self, segmentationNode) -> None:
        table = segmentationNode.GetNodeReference(VOLUME_TABLE_ROLE)
        if table is None:
            return
        volumes = self.volumesCm3(segmentationNode)
        regions, names, values = vtk.vtkStringArray(), vtk.vtkStringArray(), vtk.vtkDoubleArray()
        regions.SetName("Region")
        names.SetName("Name")
        values.SetName(VOLUME_COLUMN)
        for short, name in TABLE_ROWS:
            regions.InsertNextValue(short)
            names.InsertNextValue(name)
            values.InsertNextValue(volumes[short])
        wasModifying = table.StartModify()
        table.SetLocked(True)  # computed values: edit the segments, not the numbers
        table.RemoveAllColumns()
        for column in (regions, names, values):
            table.AddColumn(column)
        table.SetColumnUnitLabel(VOLUME_COLUMN, "cm3")
        table.SetColumnDescription(VOLUME_COLUMN, "Volume of the region, from the segmentation's voxels")
        table.EndModify(wasModifying)

    def tableVolumes(self, tableNode) -> Dict[str, float]:
        """The volume table's values as {"NCR": cm^3, ...}, as a user (or a report) reads them."""
        table = tableNode.GetTable()
        regions, values = table.GetColumnByName("Region"), table.GetColumnByName(VOLUME_COLUMN)
        return {regions.GetValue(row): values.GetValue(row) for row in range(table.GetNumberOfRows())}

    def _followEdits(self, segmentationNode) -> None:
        if segmentationNode.GetID() in self._observedSegmentations:
            return
        events = (slicer.vtkSegmentation.RepresentationModified, slicer.vtkSegmentation.SegmentModified,
                  slicer.vtkSegmentation.SegmentAdded, slicer.vtkSegmentation.SegmentRemoved)
        tags = [segmentationNode.AddObserver(event, self._onSegmentationEdited) for event in events]
        self._observedSegmentations[segmentationNode.GetID()] = (segmentationNode, tags)

    def _onSegmentationEdited(self, segmentationNode, event) -> None:
        if self._tableUpdatesPaused:
            return
        if segmentationNode.GetScene() is None:  # removed from the scene: stop following it
            _, tags = self._observedSegmentations.pop(segmentationNode.GetID(), (None, []))
            for tag in tags:
                segmentationNode.RemoveObserver(tag)
            return
        try:
            self.updateVolumeTable(segmentationNode)
        except GliomaSuiteError as error:  # e.g. reference volume deleted: keep the last numbers
            logging.warning("GliomaSuite: volume table not updated: %s", error)

    # --- display -----------------------------------------------------------------------------------

    def showSegmentsInThreeD(self, segmentationNode) -> None:
        """Show the segments as closed surfaces in 3D (edema see-through) and filled in the slices."""
        segmentationNode.CreateClosedSurfaceRepresentation()
        display = segmentationNode.GetDisplayNode()
        if display is None:
            segmentationNode.CreateDefaultDisplayNodes()
            display = segmentationNode.GetDisplayNode()
        display.SetVisibility(True)
        display.SetVisibility3D(True)
        if segmentationNode.GetSegmentation().GetSegment("ED") is not None:
            display.SetSegmentOpacity3D("ED", EDEMA_OPACITY_3D)

    def showVolumeRendering(self, volumeNode):
        """Volume-render ``volumeNode`` (the T1ce) with the GliomaSuite MR preset; returns the display node."""
        logic = self.appLogic.GetModuleLogic("VolumeRendering") if self.appLogic else None
        if logic is None:
            raise GliomaSuiteError(
                "Slicer's Volume Rendering module is not loaded, so the T1ce cannot be shown in 3D; "
                "enable it in Edit > Application Settings > Modules and restart Slicer.")
        display = logic.GetFirstVolumeRenderingDisplayNode(volumeNode)
        if display is None:
            display = logic.CreateDefaultVolumeRenderingNodes(volumeNode)
        self.applyMRPreset(display.GetVolumePropertyNode(), volumeNode)
        display.SetVisibility(True)
        return display

    def applyMRPreset(self, volumePropertyNode, volumeNode) -> None:
        """Give a volume property node the MR preset, stretched onto ``volumeNode``'s intensities."""
        preset = self._mrPreset()
        low, high = _intensityRange(volumeNode)
        scale = (high - low) / PRESET_SCALE
        volumePropertyNode.GetVolumeProperty().DeepCopy(preset)  # lighting and interpolation
        volumePropertyNode.SetScalarOpacity(_stretchedOpacity(preset.GetScalarOpacity(), low, scale))
        volumePropertyNode.SetGradientOpacity(_stretchedOpacity(preset.GetGradientOpacity(), 0.0, scale))
        volumePropertyNode.SetColor(_stretchedColours(preset.GetRGBTransferFunction(), low, scale))
        volumePropertyNode.SetName(f"{volumeNode.GetName()} (GliomaSuite MR preset)")

    def _mrPreset(self):
        if self._presetProperty is None:
            presetNode = slicer.vtkMRMLVolumePropertyNode()
            storage = slicer.vtkMRMLVolumePropertyStorageNode()
            storage.SetFileName(str(MR_PRESET_FILE))
            if not MR_PRESET_FILE.is_file() or not storage.ReadData(presetNode):
                raise GliomaSuiteError(
                    f"The volume rendering preset {MR_PRESET_FILE} is missing or unreadable; reinstall "
                    "the GliomaSuite extension.")
            self._presetProperty = presetNode.GetVolumeProperty()
        return self._presetProperty


# --- helpers ---------------------------------------------------------------------------------------

def _nodesByClass(scene, className: str) -> list:
    collection = scene.GetNodesByClass(className)
    return [collection.GetItemAsObject(index) for index in range(collection.GetNumberOfItems())]


def _referenceVolume(segmentationNode):
    return segmentationNode.GetNodeReference(segmentationNode.GetReferenceImageGeometryReferenceRole())


def _join(names: List[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _intensityRange(volumeNode):
    """(minimum, robust maximum) of a volume: the preset's 0 and PRESET_SCALE."""
    scalars = volumeNode.GetImageData().GetPointData().GetScalars()
    values = numpy_support.vtk_to_numpy(scalars).ravel()[::3]  # every third voxel is plenty for a percentile
    low = float(values.min())
    above = values[values > low]
    high = float(np.percentile(above, PRESET_UPPER_PERCENTILE)) if above.size else low + 1.0
    return low, max(high, low + 1e-3)


def _stretchedOpacity(function, offset: float, scale: float):
    stretched, node = vtk.vtkPiecewiseFunction(), [0.0] * 4
    for index in range(function.GetSize()):
        function.GetNodeValue(index, node)
        stretched.AddPoint(offset + node[0] * scale, node[1], node[2], node[3])
    return stretched


def _stretchedColours(function, offset: float, scale: float):
    stretched, node = vtk.vtkColorTransferFunction(), [0.0] * 6
    for index in range(function.GetSize()):
        function.GetNodeValue(index, node)
        stretched.AddRGBPoint(offset + node[0] * scale, node[1], node[2], node[3], node[4], node[5])
    return stretched
