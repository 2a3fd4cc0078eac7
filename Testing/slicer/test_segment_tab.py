"""The Segment tab's logic on a real case: names -> inputs -> background process -> editable result.

Everything here is the real thing: the BraTS case's volumes loaded by Slicer's Volumes logic, the
core run by GliomaSuiteLib's background runner as a separate process, the result loaded into MRML,
saved and read back by slicerio (a reader independent of Slicer), and an offscreen 3D render.

The shipped model is not needed: the runner tests use an untrained V-Net made once per session, so
its label map is arbitrary and they check plumbing only (segments, voxels equal to what the process
wrote, volumes equal to what the core reported). The render and volume-table tests load the case's
own reference segmentation through the same loading function the runner's result goes through, so
that the tumour has its real shape.

One test runs the shipped model through the runner on a case it did not train on (held out in its
model card) and renders what the user then sees; set GLIOMASUITE_SCREENSHOTS to a folder to keep
that render (the README's screenshot, docs/segment-tab-3d.png).
"""

import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import slicerio
import vtk
from vtkmodules.util import numpy_support

from gliomasuite.errors import GliomaSuiteError
from gliomasuite.labels import ED, ET, NCR, SUBREGIONS
from GliomaSuiteLib import labels_from_segmentation_node, save_segmentation
from GliomaSuiteLib.Process import CANCELLED, DONE, FAILED, BackgroundProcess
from GliomaSuiteLib.SegmentLogic import SegmentLogic

CASE = "BraTS2021_01476"
DATA = Path(os.environ.get("GLIOMASUITE_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
CASE_DIR = DATA / "brats" / CASE
MODALITY_FILES = {m: CASE_DIR / f"{CASE}_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")}
TRUTH_FILE = CASE_DIR / f"{CASE}_seg.nii.gz"

HELD_OUT = "BraTS2021_00006"  # never seen by the earlier default; 3 of the current default's 4 members trained on it
HELD_OUT_DIR = DATA / "brats" / HELD_OUT

# A run of the untrained net on one case takes about 15 s on two busy CPU cores; allow for slower CI.
RUN_TIMEOUT_S = 300


def needs_case(test):
    """Marks a test that needs the real case (skipped, with the reason, where it is absent)."""
    present = all(path.is_file() for path in [*MODALITY_FILES.values(), TRUTH_FILE])
    skip = pytest.mark.skipif(not present, reason=f"needs the BraTS case {CASE} in {CASE_DIR} (set GLIOMASUITE_DATA)")
    return pytest.mark.realdata(skip(test))


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    """An untrained V-Net of the shipped architecture: real inference, arbitrary labels."""
    import torch

    from gliomasuite.segmentation.vnet import VNet
    from gliomasuite.segmentation.weights import save_weights

    path = tmp_path_factory.mktemp("model") / "untrained-vnet.npz"
    torch.manual_seed(0)
    save_weights(VNet(channels=(8, 16, 32, 64, 128), decoder_convs=(1, 1, 1, 1)), path, input_downsample=2)
    return str(path)


def load_volumes(mrml, files):
    """MRI volumes loaded as Slicer loads files, named as Slicer names them."""
    volumes_logic = mrml.logic("Volumes")
    nodes = {}
    for modality, path in files.items():
        nodes[modality] = volumes_logic.AddArchetypeVolume(str(path), path.name[: -len(".nii.gz")], 0)
        assert nodes[modality] is not None, f"Slicer could not load {path}"
    return nodes


@pytest.fixture
def case_volumes(mrml):
    """The case's four MRI volumes."""
    return load_volumes(mrml, MODALITY_FILES)


def node_ids(scene):
    return [scene.GetNthNode(index).GetID() for index in range(scene.GetNumberOfNodes())]


def process_group_alive(pgid) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def members_of_group(pgid) -> list:
    """PIDs in a process group, from /proc (Linux): shows the launcher and its Python child."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def erase_upper_half(node, segment_id, value, reference):
    """What a user does with the Segment Editor's Erase: clear the upper half of one segment."""
    labels = labels_from_segmentation_node(node, reference)
    mask = (labels == value).astype(np.uint8)
    slices = np.nonzero(mask.any(axis=(1, 2)))[0]
    mask[slices[len(slices) // 2]:] = 0
    erased = int(np.count_nonzero(labels == value)) - int(np.count_nonzero(mask))
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(mask.shape[::-1])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(mask.ravel(), deep=True))
    ijk_to_ras = vtk.vtkMatrix4x4()
    reference.GetIJKToRASMatrix(ijk_to_ras)
    image.SetImageToWorldMatrix(ijk_to_ras)
    assert slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        image, node, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    return erased


@needs_case
def test_inputs_are_filled_in_from_volume_names(mrml, case_volumes):
    logic = SegmentLogic(mrml.scene, mrml.app_logic)
    # The reference segmentation loaded as a label map is never an input.
    mrml.logic("Volumes").AddArchetypeVolume(str(TRUTH_FILE), f"{CASE}_seg", 1)

    assert logic.inputsFromNodeNames() == case_volumes

    # A second T2 (another patient): the tab cannot know which one is meant, so it leaves the choice.
    mrml.logic("Volumes").AddArchetypeVolume(str(MODALITY_FILES["t2"]), "other_patient_T2w", 0)
    inputs = logic.inputsFromNodeNames()
    assert inputs["t2"] is None
    assert inputs["flair"] is case_volumes["flair"]


@needs_case
def test_segment_runs_in_the_background_and_gives_an_editable_segmentation(mrml, case_volumes, weights, tmp_path):
    logic = SegmentLogic(mrml.scene, mrml.app_logic, model=weights)
    t1ce = case_volumes["t1ce"]
    inputs = logic.inputsFromNodeNames()
    progress, finished = [], []

    process = logic.startSegmentation(
        inputs, device="cpu", workFolder=tmp_path / "work", onProgress=lambda fraction, _: progress.append(fraction),
        onFinished=finished.append)
    assert logic.isRunning and process.isRunning  # returned at once: the work is in the other process
    outcome = logic.waitForCompletion(timeout=RUN_TIMEOUT_S)

    assert outcome.state == DONE, outcome.errorMessage
    assert finished == [outcome]
    assert not logic.isRunning
    assert progress == sorted(progress) and progress[-1] >= 0.9, progress

    node = outcome.segmentationNode
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())] == ["NCR", "ED", "ET"]
    assert [segmentation.GetNthSegment(n).GetName() for n in range(3)] == [name for _, _, name, _ in SUBREGIONS]
    assert node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole()) is t1ce  # DICOM SEG needs it
    assert node.GetDisplayNode().GetVisibility3D()
    assert segmentation.ContainsRepresentation(slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName())

    # The node holds exactly the label map the background process wrote.
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "work" / "labels.nrrd")))
    assert set(np.unique(written)) <= {0, NCR, ED, ET} and written.any()
    np.testing.assert_array_equal(labels_from_segmentation_node(node, t1ce), written)

    # ... and so does the saved .seg.nrrd, read by slicerio.
    saved = slicerio.read_segmentation(str(save_segmentation(node, tmp_path / "tumour.seg.nrrd")))
    for value, short_name, display_name, _ in SUBREGIONS:
        assert slicerio.segment_from_id(saved, short_name)["name"] == display_name
        mask = slicerio.segment_mask(saved, short_name).transpose(2, 1, 0)
        np.testing.assert_array_equal(mask, written == value, err_msg=f"{display_name} differs in the file")

    # The volume table says what the core reported for its label map.
    assert logic.tableVolumes(outcome.tableNode) == process.result["volumes_cm3"] == outcome.volumesCm3

    # The user edits the result; Segment again must leave the edited node alone.
    erase_upper_half(node, "NCR", NCR, t1ce)
    assert logic.isEdited(node)
    edited = labels_from_segmentation_node(node, t1ce)
    nodes_before = mrml.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")

    logic.startSegmentation(inputs, device="cpu", outputNode=node)
    second = logic.waitForCompletion(timeout=RUN_TIMEOUT_S)

    assert second.state == DONE, second.errorMessage
    assert second.segmentationNode is not node
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == nodes_before + 1
    np.testing.assert_array_equal(labels_from_segmentation_node(node, t1ce), edited)
    np.testing.assert_array_equal(labels_from_segmentation_node(second.segmentationNode, t1ce), written)
    assert any(node.GetName() in note and "edited" in note for note in second.notes), second.notes


def colour_dominant(rgb, channel, margin=40):
    """Pixels where one channel (0 red, 1 green) clearly exceeds the other two."""
    pixels = rgb.astype(int)
    others = [c for c in range(3) if c != channel]
    return np.all(pixels[..., [channel]] > pixels[..., others] + margin, axis=-1)


@needs_case
def test_tumour_shows_in_3d_beside_the_t1ce_volume_rendering(mrml, case_volumes, threed_view, tmp_path):
    logic = SegmentLogic(mrml.scene, mrml.app_logic)
    t1ce = case_volumes["t1ce"]
    node = logic.loadResult(TRUTH_FILE, t1ce)
    rendering = logic.showVolumeRendering(t1ce)
    assert rendering.GetVisibility() and rendering.GetVolumePropertyNode() is not None

    png = tmp_path / "segment_tab_3d.png"
    with_tumour, brain_only = assert_tumour_shows_in_3d(threed_view, node, png)
    lit = brain_only.max(axis=2) > 30
    assert lit.mean() > 0.15, f"the T1ce volume rendering hardly shows in {png}"
    changed = np.abs(with_tumour.astype(int) - brain_only.astype(int)).sum(axis=2) > 60
    assert (changed & colour_dominant(with_tumour, 0)).sum() > 30, f"no necrotic core (red) in {png}"


def assert_tumour_shows_in_3d(threed_view, segmentation_node, png):
    """Render from above with and without the segments: the tumour surfaces must change the picture,
    edema in its green. Returns both renders (the one with the tumour is also written to ``png``)."""
    with_tumour = render_from_above(threed_view, png)
    segmentation_node.GetDisplayNode().SetVisibility(False)
    brain_only = threed_view.capture()
    changed = np.abs(with_tumour.astype(int) - brain_only.astype(int)).sum(axis=2) > 60
    assert changed.mean() > 0.01, f"the tumour hardly shows in {png}"
    assert (changed & colour_dominant(with_tumour, 1)).sum() > 300, f"no edema (green) in {png}"
    return with_tumour, brain_only


def render_from_above(threed_view, png):
    """The view a radiologist first looks at: from above and in front, tumour and brain filling it."""
    threed_view.set_background((0.0, 0.0, 0.0))
    threed_view.reset_camera("Superior")
    camera = threed_view.renderer.GetActiveCamera()
    camera.Elevation(-35)
    camera.Zoom(1.6)
    threed_view.renderer.ResetCameraClippingRange()
    return threed_view.capture(png)


@pytest.mark.realdata
@pytest.mark.skipif(not (HELD_OUT_DIR / f"{HELD_OUT}_seg.nii.gz").is_file(),
                    reason=f"needs the BraTS case {HELD_OUT} in {HELD_OUT_DIR} (set GLIOMASUITE_DATA)")
def test_shipped_model_segments_a_held_out_case_and_the_result_shows_in_3d(mrml, threed_view, tmp_path):
    from gliomasuite.labels import region_masks
    from gliomasuite.metrics import dice as dice_of

    volumes = load_volumes(mrml, {m: HELD_OUT_DIR / f"{HELD_OUT}_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")})
    logic = SegmentLogic(mrml.scene, mrml.app_logic)  # the shipped model, as a user gets it
    logic.startSegmentation(logic.inputsFromNodeNames(), device="cpu", workFolder=tmp_path / "work")
    outcome = logic.waitForCompletion(timeout=RUN_TIMEOUT_S)
    assert outcome.state == DONE, outcome.errorMessage

    labels = labels_from_segmentation_node(outcome.segmentationNode, volumes["t1ce"])
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(HELD_OUT_DIR / f"{HELD_OUT}_seg.nii.gz")))
    predicted, true = region_masks(labels), region_masks(truth)
    dice = {region: dice_of(predicted[region], true[region]) for region in ("WT", "TC", "ET")}
    # WT 0.923 with the earlier default, which never saw this case (the current one trained on it in 3 of 4 members);
    # a broken load/resample path gives ~0.
    assert dice["WT"] > 0.85, dice

    logic.showVolumeRendering(volumes["t1ce"])
    png = tmp_path / "segment-tab-3d.png"
    assert_tumour_shows_in_3d(threed_view, outcome.segmentationNode, png)
    if os.environ.get("GLIOMASUITE_SCREENSHOTS"):
        shutil.copy(png, Path(os.environ["GLIOMASUITE_SCREENSHOTS"]) / png.name)


@needs_case
def test_uncertainty_map_overlays_the_slice_views_and_is_high_at_the_tumour_boundary(mrml, tmp_path):
    """What a reader checking the masks relies on: the map that came from the core, on the T1ce's
    grid, over every slice view, brightest where the segments' edges are in doubt."""
    from scipy import ndimage

    from GliomaSuiteLib.SegmentLogic import UNCERTAINTY_FILE

    volumes = load_volumes(mrml, {m: HELD_OUT_DIR / f"{HELD_OUT}_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")})
    for name in ("Red", "Yellow", "Green"):  # the slice views' composite nodes, as Slicer's layout makes them
        composite = mrml.scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        composite.SetLayoutName(name)
    logic = SegmentLogic(mrml.scene, mrml.app_logic)
    process = logic.startSegmentation(logic.inputsFromNodeNames(), device="cpu", workFolder=tmp_path / "work",
                                      uncertainty=True)
    outcome = logic.waitForCompletion(timeout=RUN_TIMEOUT_S)
    assert outcome.state == DONE, outcome.errorMessage

    node = outcome.uncertaintyNode
    assert node is not None and logic.uncertaintyNode(outcome.segmentationNode) is node
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "work" / UNCERTAINTY_FILE)))
    np.testing.assert_allclose(slicer.util.arrayFromVolume(node), written)
    assert written.min() >= 0 and written.max() <= 0.5 + 1e-6
    composites = mrml.scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    assert all(composites.GetItemAsObject(i).GetForegroundVolumeID() == node.GetID()
               for i in range(composites.GetNumberOfItems()))

    # Doubt lies at the segments' edges: within 2 mm of the whole tumour's boundary the map is on
    # average far higher than in the rest of the brain.
    labels = labels_from_segmentation_node(outcome.segmentationNode, volumes["t1ce"])
    tumour = labels > 0
    edge = ndimage.binary_dilation(tumour, iterations=2) & ~ndimage.binary_erosion(tumour, iterations=2)
    brain = sitk.GetArrayFromImage(sitk.ReadImage(str(HELD_OUT_DIR / f"{HELD_OUT}_t1ce.nii.gz"))) > 0
    elsewhere = brain & ~ndimage.binary_dilation(tumour, iterations=5)
    assert written[edge].mean() > 10 * written[elsewhere].mean(), (written[edge].mean(), written[elsewhere].mean())

    # The regions to check are the core's, in words, and travel with the volume node.
    assert outcome.uncertainRegions == [r["sentence"] for r in process.result["uncertain_regions"]]
    assert outcome.uncertainRegions and all("cm3 uncertain" in s for s in outcome.uncertainRegions)
    assert logic.uncertainRegions(outcome.segmentationNode) == process.result["uncertain_regions"]

    logic.showUncertainty(outcome.segmentationNode, show=False)
    assert all(not composites.GetItemAsObject(i).GetForegroundVolumeID() for i in range(composites.GetNumberOfItems()))


@needs_case
def test_volume_table_matches_the_core_and_follows_edits(mrml, case_volumes):
    from gliomasuite.segmentation.inference import volumes_cm3

    logic = SegmentLogic(mrml.scene, mrml.app_logic)
    t1ce = case_volumes["t1ce"]
    truth = sitk.ReadImage(str(TRUTH_FILE))
    node = logic.loadResult(truth, t1ce)
    table = node.GetNodeReference("GliomaSuite.volumeTable")

    core = {region: round(value, 3) for region, value in volumes_cm3(truth).items()}
    assert logic.tableVolumes(table) == core
    assert list(logic.tableVolumes(table)) == ["NCR", "ED", "ET", "TC", "WT"]
    assert table.GetColumnUnitLabel("Volume (cm3)") == "cm3"
    assert not logic.isEdited(node)

    # Loading again into an unedited result updates it in place ...
    assert logic.loadResult(truth, t1ce, outputNode=node) is node

    # ... an edit (no call to the logic) updates the table through the segmentation's events ...
    erased = erase_upper_half(node, "NCR", NCR, t1ce)
    assert erased > 0
    after = logic.tableVolumes(table)
    voxel_cm3 = float(np.prod(t1ce.GetSpacing())) / 1000.0
    for region in ("NCR", "TC", "WT"):
        assert after[region] == pytest.approx(core[region] - erased * voxel_cm3, abs=1e-6), region
    assert after["ED"] == core["ED"] and after["ET"] == core["ET"]

    # ... and from then on a new result goes into a new node, the edited one stays as it is.
    assert logic.isEdited(node)
    edited = labels_from_segmentation_node(node, t1ce)
    new_node = logic.loadResult(truth, t1ce, outputNode=node)
    assert new_node is not node and new_node.GetName() != node.GetName()
    np.testing.assert_array_equal(labels_from_segmentation_node(node, t1ce), edited)
    assert logic.tableVolumes(table) == after
    # Overwriting is possible, but only when asked for.
    assert logic.loadResult(truth, t1ce, outputNode=node, overwrite=True) is node
    assert logic.tableVolumes(table) == core


@needs_case
def test_cancel_stops_the_whole_process_tree_and_leaves_the_scene_as_it_was(mrml, case_volumes, weights, tmp_path):
    # Slicer starts the core through PythonSlicer, a launcher that runs the real interpreter as its
    # child; a shell script plays that part here, so Cancel has a tree to stop, not one process.
    launcher = tmp_path / "PythonSlicer"
    launcher.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"\n')
    launcher.chmod(0o755)
    logic = SegmentLogic(mrml.scene, mrml.app_logic, model=weights, python=str(launcher))
    scene_before = node_ids(mrml.scene)
    progress, finished = [], []

    process = logic.startSegmentation(
        logic.inputsFromNodeNames(), device="cpu", workFolder=tmp_path / "work",
        onProgress=lambda fraction, message: progress.append(message), onFinished=finished.append)
    deadline = time.monotonic() + 120
    while not progress and logic.poll() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert progress and logic.isRunning, "the job ended or stalled before its first progress line"
    if Path("/proc").is_dir():
        assert len(members_of_group(process.pid)) >= 2, "expected the launcher and its Python child"

    cancelled_at = time.monotonic()
    logic.cancel()
    outcome = logic.waitForCompletion(timeout=30)
    while process_group_alive(process.pid) and time.monotonic() - cancelled_at < 10:
        time.sleep(0.05)

    assert not process_group_alive(process.pid), "processes of the job outlived Cancel"
    assert time.monotonic() - cancelled_at < 10
    assert outcome.state == CANCELLED and finished == [outcome]
    assert outcome.segmentationNode is None and not outcome.errorMessage
    assert not (tmp_path / "work" / "labels.nrrd").exists()
    assert node_ids(mrml.scene) == scene_before


@needs_case
def test_a_missing_modality_is_reported_in_plain_words(mrml, case_volumes, weights, tmp_path):
    logic = SegmentLogic(mrml.scene, mrml.app_logic, model=weights)
    inputs = dict(logic.inputsFromNodeNames(), flair=None)
    with pytest.raises(GliomaSuiteError, match="No volume is selected for FLAIR"):
        logic.startSegmentation(inputs)
    assert not logic.isRunning

    # The background runner passes on the core's own sentence when the core finds the problem.
    errors, finished = [], []
    output = tmp_path / "labels.nrrd"
    arguments = ["segment", "--model", weights, "-o", output]
    for modality in ("t1", "t1ce", "t2"):
        arguments += [f"--{modality}", MODALITY_FILES[modality]]
    process = BackgroundProcess(arguments, onError=errors.append, onFinished=finished.append).start()

    assert process.waitForCompletion(timeout=120) == FAILED
    assert process.returnCode == 2 and finished == [FAILED]
    assert len(errors) == 1 and "FLAIR" in errors[0] and "Traceback" not in errors[0], errors
    assert not output.exists()


@needs_case
def test_without_t1_and_t2_the_tab_segments_with_the_model_trained_without_them(mrml, case_volumes, tmp_path):
    from gliomasuite.segmentation.inference import REDUCED_MODEL

    logic = SegmentLogic(mrml.scene, mrml.app_logic)  # shipped models, as a user gets them
    inputs = dict(logic.inputsFromNodeNames(), t1=None, t2=None)
    logic.startSegmentation(inputs, device="cpu", workFolder=tmp_path / "work")
    outcome = logic.waitForCompletion(timeout=RUN_TIMEOUT_S)

    assert outcome.state == DONE, outcome.errorMessage
    assert any(REDUCED_MODEL in note for note in outcome.notes), outcome.notes
    assert sorted(p.name for p in (tmp_path / "work").glob("*.nrrd")) == ["flair.nrrd", "labels.nrrd", "t1ce.nrrd"]
    labels = labels_from_segmentation_node(outcome.segmentationNode, case_volumes["t1ce"])
    assert (labels > 0).sum() > 10000  # a tumour of several cm3, not an empty map


def test_volumes_that_are_not_brain_mri_leave_the_scene_alone_until_the_user_says_go_on(mrml, weights, tmp_path):
    """The core's brain check refuses a box of tissue; the tab adds nothing (a previous result stays
    as it was) and says why, and segments only when asked again with skipBrainCheck."""
    from test_brain_check import write_tissue_box  # Testing/core, on pytest's pythonpath

    box = write_tissue_box(tmp_path / "box")
    load_volumes(mrml, {m: box / f"case_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")})
    logic = SegmentLogic(mrml.scene, mrml.app_logic, model=weights)
    inputs = logic.inputsFromNodeNames()
    reference = sitk.ReadImage(str(box / "case_t1ce.nii.gz"))
    earlier = np.zeros(reference.GetSize()[::-1], np.uint8)
    earlier[60:90, 60:90, 60:90] = 2
    earlier = sitk.GetImageFromArray(earlier)
    earlier.CopyInformation(reference)
    previous = logic.loadResult(earlier, inputs["t1ce"])  # an earlier, unedited result the run would update
    scene_before = node_ids(mrml.scene)
    voxels_before = labels_from_segmentation_node(previous, inputs["t1ce"])

    logic.startSegmentation(inputs, device="cpu", outputNode=previous)
    refused = logic.waitForCompletion(timeout=RUN_TIMEOUT_S)
    assert refused.state == FAILED and refused.segmentationNode is None
    assert any("4096 cm3" in problem for problem in refused.brainCheck), refused.brainCheck
    assert refused.errorMessage.startswith("These volumes were not segmented") and "4096 cm3" in refused.errorMessage
    assert "skull-strip" in refused.errorMessage
    assert node_ids(mrml.scene) == scene_before
    assert np.array_equal(labels_from_segmentation_node(previous, inputs["t1ce"]), voxels_before)

    logic.startSegmentation(inputs, device="cpu", skipBrainCheck=True)
    forced = logic.waitForCompletion(timeout=RUN_TIMEOUT_S)
    assert forced.state == DONE and forced.segmentationNode is not None and not forced.brainCheck
    assert any("brain check failed" in note for note in forced.notes), forced.notes


def test_the_slicer_glue_imports_without_pytorch():
    """Slicer loads the module before PyTorch is installed (the first Segment installs it, after asking)."""
    import subprocess

    module_dir = Path(__file__).resolve().parents[2] / "GliomaSuite"
    code = ("import sys; sys.modules['torch'] = None; sys.path.insert(0, sys.argv[1]); "
            "import GliomaSuiteLib.SegmentLogic, GliomaSuiteLib.SurvivalLogic, gliomasuite.brain_check")
    result = subprocess.run([sys.executable, "-c", code, str(module_dir)], capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert result.returncode == 0, result.stderr


def test_a_process_that_dies_without_a_word_still_gets_an_explanation():
    errors = []
    process = BackgroundProcess(["segment"], onError=errors.append).start()  # no output named: argparse exits

    assert process.waitForCompletion(timeout=60) == FAILED
    assert errors == [process.errorMessage]
    assert "exit status 2" in errors[0] and "--output" in errors[0], errors


def test_the_runner_needs_starting_before_waiting_and_runs_once():
    process = BackgroundProcess(["--version"])
    with pytest.raises(RuntimeError, match="start"):
        process.waitForCompletion()
    process.start()
    with pytest.raises(RuntimeError, match="already started"):
        process.start()
    # Exit status 0 without a "done" line is not a success: every command ends with one.
    assert process.waitForCompletion(timeout=60) == FAILED
    assert process.returnCode == 0
