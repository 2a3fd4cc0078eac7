"""The Follow-up tab's logic on real follow-ups: time points -> background process -> browsable, measurable result.

Everything here is the real thing: ``gliomasuite followup`` run by GliomaSuiteLib's background runner
as a separate process, on two real patients: UCSF-ALPTDG 100118 (two post-treatment label maps, no
images, no dates) and TCIA Brain-Tumor-Progression PGBM-01 (a T1ce before and after treatment with the
reader's masks, dated, registered by the core). Its output folder is loaded into a real MRML scene,
the RANO lines are dragged as a reader drags them, and the scene is saved to disk and loaded again
into a fresh scene.

The numbers the tests expect are those the core wrote into followup.json (the core's own tests check
them against the label maps); here they must arrive unchanged in the nodes.
"""

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
from vtkmodules.util import numpy_support

from conftest import build_mrml_app
from gliomasuite.errors import GliomaSuiteError
from GliomaSuiteLib import RanoLines, labels_from_segmentation_node, segmentation_node_from_labels, volume_node_from_image
from GliomaSuiteLib.FollowupLogic import (
    CHANGE_SEGMENTS,
    FOLLOWUP_ATTRIBUTE,
    FollowupLogic,
    TimePointInput,
    indexValues,
    readFollowup,
)
from GliomaSuiteLib.Process import CANCELLED, DONE, FAILED
from test_segment_tab import members_of_group, node_ids, process_group_alive

DATA = Path(os.environ.get("GLIOMASUITE_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
UCSF_DIR = DATA / "longitudinal" / "ucsf-alptdg-segs" / "100118"
UCSF_MAPS = [UCSF_DIR / f"100118_time{i}_seg.nii.gz" for i in (1, 2)]
PGBM_DIR = DATA / "longitudinal" / "brain-tumor-progression" / "PGBM-01"
PGBM_SCANS = [PGBM_DIR / f"{when}_Scan_T1.nii.gz" for when in ("Pre", "Post")]
PGBM_MASKS = [PGBM_DIR / f"{when}_Mask.nii.gz" for when in ("Pre", "Post")]
PGBM_DATES = ("1996-08-13", "1997-01-17")  # the collection's scan dates: 157 days apart

# A run takes 4 s (label maps) to 8 s (registration) on two busy CPU cores; allow for slower CI.
RUN_TIMEOUT_S = 180


def needs(*paths):
    present = all(path.is_file() for path in paths)
    return pytest.mark.skipif(not present, reason=f"needs {paths[0].parent} (set GLIOMASUITE_DATA)")


needs_ucsf = needs(*UCSF_MAPS)
needs_pgbm = needs(*PGBM_SCANS, *PGBM_MASKS)


def pgbm_timepoints():
    return [TimePointInput(scan, mask=mask, date=date) for scan, mask, date in zip(PGBM_SCANS, PGBM_MASKS, PGBM_DATES)]


def run_followup(logic, timepoints, **options):
    """Start a follow-up, check it runs in the background, wait; returns (outcome, progress fractions)."""
    progress, finished = [], []
    process = logic.startFollowup(timepoints, onProgress=lambda fraction, _: progress.append(fraction),
                                  onFinished=finished.append, **options)
    assert logic.isRunning and process.isRunning  # returned at once: the work is in the other process
    outcome = logic.waitForCompletion(timeout=RUN_TIMEOUT_S)
    assert finished == [outcome] and not logic.isRunning
    return outcome, progress


@pytest.fixture(scope="module")
def pgbm_run(tmp_path_factory):
    """PGBM-01 compared once for this module, as the brief's command line gives it (files, dates,
    binary masks, one T1ce each); tests load its output folder into scenes of their own."""
    if not all(path.is_file() for path in (*PGBM_SCANS, *PGBM_MASKS)):
        pytest.skip(f"needs {PGBM_DIR} (set GLIOMASUITE_DATA)")
    app = build_mrml_app()
    logic = FollowupLogic(app.scene, app.app_logic)
    output = tmp_path_factory.mktemp("pgbm") / "followup"
    outcome, progress = run_followup(logic, pgbm_timepoints(), outputFolder=output, labels="binary",
                                     modality="t1ce", name="PGBM-01")
    assert outcome.state == DONE, outcome.errorMessage
    yield {"app": app, "logic": logic, "outcome": outcome, "progress": progress, "output": output}
    logic.cleanup()
    app.scene.Clear(True)


# --- checks shared by the tests ---------------------------------------------------------------------

def table_rows(table_node) -> list:
    table = table_node.GetTable()
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    return [{name: table.GetValue(r, c).ToString() if table.GetColumn(c).IsA("vtkStringArray")
             else table.GetValue(r, c).ToDouble() for c, name in enumerate(names)}
            for r in range(table.GetNumberOfRows())]


def assert_table_says_what_the_json_says(nodes, result):
    rows = table_rows(nodes.tableNode)
    assert [row["Time point"] for row in rows] == [tp["label"] for tp in result["timepoints"]]
    responses = {entry["label"]: entry["category"] for entry in result["responses"]}
    for row, tp in zip(rows, result["timepoints"]):
        for region in ("NCR", "ED", "ET", "TC", "WT"):
            assert row[region] == tp["volumes_cm3"][region], (tp["label"], region)
        assert row["SPD"] == pytest.approx(tp["sum_of_products_mm2"], abs=1e-9)
        assert row["Date"] == (tp["date"] or "")
        if tp["days_from_baseline"] is None:
            assert math.isnan(row["Days"])
        else:
            assert row["Days"] == tp["days_from_baseline"]
        assert row["Response"] == ("baseline" if tp["is_baseline"] else responses[tp["label"]])
    assert nodes.tableNode.GetColumnUnitLabel("WT") == "cm3" and nodes.tableNode.GetColumnUnitLabel("SPD") == "mm2"
    results = table_rows(nodes.resultsTableNode)
    assert results[0] == {"Item": "Response", "Value": result["response"]["sentence"]}


def assert_lines_are_the_json_diameters(nodes, result):
    expected = 0
    for tp in result["timepoints"]:
        for lesion in tp["lesions"]:
            if not lesion["diameters"]:
                continue
            for role in (RanoLines.LONG, RanoLines.SHORT):
                expected += 1
                lines = nodes.lines(tp["label"], lesion["track_id"], role)
                assert len(lines) == 1, (tp["label"], lesion["track_id"], role)
                line = lines[0]
                assert line.GetName() == f"{tp['label']} lesion {lesion['track_id']} {role}"
                assert line.GetAttribute("GliomaSuite.rano.timepoint") == tp["label"]
                assert line.GetAttribute("GliomaSuite.rano.trackId") == str(lesion["track_id"])
                assert line.GetAttribute("GliomaSuite.rano.role") == role
                assert RanoLines.lineLengthMm(line) == pytest.approx(lesion["diameters"][f"{role}_mm"], abs=0.01)
                lps = np.array(lesion["diameters"][f"{role}_ends_lps"], dtype=float)
                np.testing.assert_allclose(RanoLines.lineEndsRas(line), lps * [-1, -1, 1], atol=1e-6)
    assert expected > 0 and len(nodes.lineNodes) == expected


def segment_voxels(segmentation_node, segment_id) -> int:
    """Voxels of one segment, counted in its own binary labelmap."""
    image = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(segmentation_node, segment_id, image)
    value = segmentation_node.GetSegmentation().GetSegment(segment_id).GetLabelValue()
    return int(np.count_nonzero(numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()) == value))


def et_voxels(segmentation_node, reference) -> int:
    return int(np.count_nonzero(labels_from_segmentation_node(segmentation_node, reference) == 4))


def assert_stepping_shows_each_time_point(logic, nodes, result, folder, reference):
    """The browser steps through the time points: the segmentation shown is that time point's, and
    only its RANO lines are visible."""
    browser = nodes.browserNode
    for index, tp in enumerate(result["timepoints"]):
        browser.SetSelectedItemNumber(index)
        written = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / tp["files"]["segmentation"])))
        assert et_voxels(nodes.segmentationNode, reference) == np.count_nonzero(written == 4), tp["label"]
        assert logic.selectedTimePoint(browser)["label"] == tp["label"]
        visible = {line.GetAttribute("GliomaSuite.rano.timepoint") for line in nodes.lineNodes
                   if line.GetDisplayNode().GetVisibility()}
        assert visible == ({tp["label"]} if any(les["diameters"] for les in tp["lesions"]) else set())


def drag_end(line, length_mm):
    """What a reader does: drag the line's second end along the line until it is ``length_mm`` long."""
    start, end = RanoLines.lineEndsRas(line)
    direction = (end - start) / np.linalg.norm(end - start)
    line.SetNthControlPointPositionWorld(1, *(start + direction * length_mm))


def add_markups_logic(app):
    """Slicer's Markups module logic on the scene, as Slicer sets it up: it registers the markups'
    storage nodes, without which a scene saves no line. (conftest's MODULE_LOGICS lacks it.)"""
    if "Markups" not in app.logics:
        logic = slicer.vtkSlicerMarkupsLogic()
        logic.SetMRMLApplicationLogic(app.app_logic)
        logic.SetMRMLScene(app.scene)
        app.app_logic.SetModuleLogic("Markups", logic)
        app.logics["Markups"] = logic
    return app


def save_and_reload(app, folder):
    """Save the scene as Slicer does (a data bundle folder: MRML file and the nodes' data) and load it
    into a fresh scene, with the data I/O manager Slicer gives its scene (needed for sequences)."""
    folder.mkdir(parents=True)
    assert app.app_logic.SaveSceneToSlicerDataBundleDirectory(str(folder), None)
    mrml_file = next(folder.glob("*.mrml"))
    fresh = add_markups_logic(build_mrml_app())
    cache = slicer.vtkCacheManager()
    (folder.parent / "cache").mkdir(exist_ok=True)
    cache.SetRemoteCacheDirectory(str(folder.parent / "cache"))
    io_manager = slicer.vtkDataIOManager()
    io_manager.SetCacheManager(cache)
    fresh.scene.SetCacheManager(cache)
    fresh.scene.SetDataIOManager(io_manager)
    fresh.scene.SetURL(str(mrml_file))
    assert fresh.scene.Connect() == 1, f"{mrml_file} could not be loaded"
    return fresh


# --- (a) running and loading ------------------------------------------------------------------------

@needs_ucsf
def test_label_maps_alone_from_the_scene_run_in_the_background_and_load(mrml, tmp_path):
    """Two post-treatment label maps loaded as label map volumes, no images and no dates."""
    volumes = mrml.logic("Volumes")
    masks = [volumes.AddArchetypeVolume(str(path), path.name[: -len(".nii.gz")], 1) for path in UCSF_MAPS]
    assert all(mask is not None and mask.IsA("vtkMRMLLabelMapVolumeNode") for mask in masks)
    logic = FollowupLogic(mrml.scene, mrml.app_logic)
    output = tmp_path / "followup"
    outcome, progress = run_followup(logic, [TimePointInput(mask=mask, label=f"T{n}") for n, mask in
                                             enumerate(masks, start=1)], outputFolder=output, labels="post-treatment")

    assert outcome.state == DONE, outcome.errorMessage
    assert progress == sorted(progress) and progress[-1] == 1.0, progress
    result = readFollowup(output)
    assert logic.result() == result and outcome.result is logic.result()
    assert [tp["label"] for tp in result["timepoints"]] == ["T1_seg", "T2_seg"]  # the core names them by file
    assert result["response"]["category"] == "PD"
    nodes = outcome.nodes
    browser = nodes.browserNode
    assert browser.GetAttribute(FOLLOWUP_ATTRIBUTE) == str(output)

    # Without dates the index is the time point's number; there are no images, so no volume sequences.
    sequence = nodes.segmentationSequence
    assert browser.GetNumberOfItems() == 2
    assert [sequence.GetNthIndexValue(i) for i in range(2)] == ["1", "2"] == indexValues(result)
    assert sequence.GetIndexName() == "time point" and sequence.GetIndexType() == sequence.NumericIndex
    assert nodes.volumeSequences == {}
    assert browser.GetSelectedItemNumber() == 1  # the latest scan first

    segmentation = nodes.segmentationNode.GetSegmentation()
    assert [segmentation.GetNthSegmentID(i) for i in range(3)] == ["NCR", "ED", "ET"]
    assert [segmentation.GetNthSegment(i).GetName() for i in range(3)] == ["Necrotic core", "Edema", "Enhancing tumour"]
    assert nodes.segmentationNode.GetDisplayNode().GetVisibility3D()
    reference = volume_node_from_image(mrml.scene, sitk.ReadImage(str(output / result["timepoints"][0]["files"]
                                                                      ["segmentation"])), "grid")
    assert_stepping_shows_each_time_point(logic, nodes, result, output, reference)
    assert_table_says_what_the_json_says(nodes, result)
    assert_lines_are_the_json_diameters(nodes, result)

    # The change segmentation: enhancing voxels of TP2 not enhancing at TP1, split by lesion track.
    before, now = (sitk.GetArrayFromImage(sitk.ReadImage(str(output / tp["files"]["segmentation"])))
                   for tp in result["timepoints"])
    change = nodes.changeNode
    assert [change.GetSegmentation().GetNthSegment(i).GetName() for i in range(3)] == [n for _, n, _ in CHANGE_SEGMENTS]
    voxels = {segment_id: segment_voxels(change, segment_id) for segment_id, _, _ in CHANGE_SEGMENTS}
    appeared = int(np.count_nonzero((now == 4) & (before != 4)))
    assert voxels["New"] + voxels["Grown"] == appeared
    assert voxels["Shrunk"] == np.count_nonzero((before == 4) & (now != 4))
    new_lesion = next(les for les in result["timepoints"][1]["lesions"] if les["status"] == "new")
    assert 0 < voxels["New"] <= new_lesion["voxels"]  # the new track's enhancing voxels, all newly enhancing
    assert logic.changeVolumesCm3() == {k: round(v / 1000, 3) for k, v in voxels.items()}  # 1 mm voxels

    # The chart: ET, TC and WT over the time point number, from the volume table.
    chart = nodes.chartNode
    assert chart.GetNumberOfPlotSeriesNodes() == 3
    series = [chart.GetNthPlotSeriesNode(i) for i in range(3)]
    assert [s.GetYColumnName() for s in series] == ["ET", "TC", "WT"]
    assert {s.GetXColumnName() for s in series} == {"Scan"} and {s.GetTableNode() for s in series} == {nodes.tableNode}

    # The reader finds the new growth smaller than measured: below 10 mm the lesion is not measurable,
    # nothing measurable is left, and the sum of products is no longer progression.
    long_line = nodes.lines("T2_seg", 1, RanoLines.LONG)[0]
    drag_end(long_line, 9.0)
    assert logic.response()["category"] == "SD"
    assert table_rows(nodes.tableNode)[1]["SPD"] == 0 and table_rows(nodes.tableNode)[1]["Response"] == "SD"
    assert logic.response()["volumetric"]["category"] == "PD"  # the volumes did not change
    # Label maps alone: the recurrence model ran but, with no T1ce, gives neither a number nor a map, and says so.
    assert logic.recurrenceAvailable() and logic.recurrence()["probability"] is None
    assert "T1ce" in logic.recurrence()["sentence"] and logic.recurrenceMapNode() is None


@needs_pgbm
def test_a_dated_scan_pair_with_masks_runs_registered_and_loads(pgbm_run):
    """PGBM-01 as the core's command line takes it: files, masks, dates; the core registers Post to Pre."""
    outcome, logic, output = pgbm_run["outcome"], pgbm_run["logic"], pgbm_run["output"]
    assert pgbm_run["progress"] == sorted(pgbm_run["progress"])
    result = readFollowup(output)
    assert result["timepoints"][1]["registration"]["kind"] == "rigid"
    nodes = outcome.nodes
    browser, sequence = nodes.browserNode, nodes.segmentationSequence

    assert browser.GetNumberOfItems() == 2
    assert [sequence.GetNthIndexValue(i) for i in range(2)] == ["0", "157"]
    assert (sequence.GetIndexName(), sequence.GetIndexUnit()) == ("time", "days")
    volumes = nodes.volumeSequences["t1ce"]
    assert [volumes.GetNthIndexValue(i) for i in range(2)] == ["0", "157"]
    assert browser.IsSynchronizedSequenceNode(volumes.GetID())

    # Stepping the browser brings each time point's registered T1ce with its segmentation.
    for index, tp in enumerate(result["timepoints"]):
        browser.SetSelectedItemNumber(index)
        written = sitk.GetArrayFromImage(sitk.ReadImage(str(output / tp["files"]["t1ce"])))
        np.testing.assert_allclose(slicer.util.arrayFromVolume(nodes.volumeNode("t1ce")), written)
    assert_stepping_shows_each_time_point(logic, nodes, result, output, nodes.volumeNode("t1ce"))
    assert_table_says_what_the_json_says(nodes, result)
    assert_lines_are_the_json_diameters(nodes, result)
    chart_x = {nodes.chartNode.GetNthPlotSeriesNode(i).GetXColumnName() for i in range(3)}
    assert chart_x == {"Days"}
    assert result["response"]["category"] == "SD"


@needs_pgbm
def test_volumes_and_segmentations_in_the_scene_give_the_same_follow_up_as_files(mrml, pgbm_run, tmp_path):
    """The same scans loaded into Slicer, the reader's masks as segmentation nodes (written as BraTS
    enhancing tumour): what the tab exports for the core must be what the files say."""
    volumes = mrml.logic("Volumes")
    timepoints = []
    for scan, mask, date, label in zip(PGBM_SCANS, PGBM_MASKS, PGBM_DATES, ("Pre", "Post")):
        t1ce = volumes.AddArchetypeVolume(str(scan), f"{label} T1ce", 0)
        binary = sitk.ReadImage(str(mask))
        segmentation = segmentation_node_from_labels(mrml.scene, sitk.Cast(binary > 0, sitk.sitkUInt8) * 4, t1ce,
                                                     f"{label} reader")
        timepoints.append(TimePointInput({"t1ce": t1ce}, mask=segmentation, date=date, label=label))
    logic = FollowupLogic(mrml.scene, mrml.app_logic)
    exports_before = set(Path(tempfile.gettempdir()).glob("GliomaSuite-followup-inputs-*"))
    outcome, _ = run_followup(logic, timepoints)

    assert outcome.state == DONE, outcome.errorMessage
    ours, files = outcome.result, readFollowup(pgbm_run["output"])
    assert [tp["label"] for tp in ours["timepoints"]] == ["Pre", "Post"]
    for mine, theirs in zip(ours["timepoints"], files["timepoints"]):
        assert mine["volumes_cm3"] == theirs["volumes_cm3"]  # measured on each scan's own grid: exact
        assert mine["days_from_baseline"] == theirs["days_from_baseline"]
    assert ours["timepoints"][0]["sum_of_products_mm2"] == files["timepoints"][0]["sum_of_products_mm2"]
    assert ours["timepoints"][1]["sum_of_products_mm2"] == pytest.approx(files["timepoints"][1]["sum_of_products_mm2"],
                                                                          rel=0.02)
    assert ours["response"]["category"] == files["response"]["category"]
    assert (outcome.outputFolder / "followup.json").is_file()  # a temporary output is kept: it is the follow-up
    assert set(Path(tempfile.gettempdir()).glob("GliomaSuite-followup-inputs-*")) <= exports_before, \
        "the volumes exported for the core were left behind"


# --- (b) dragging a line judges the response again ----------------------------------------------------

@needs_pgbm
def test_dragging_a_rano_line_end_changes_the_sum_of_products_and_the_response(mrml, pgbm_run):
    logic = FollowupLogic(mrml.scene, mrml.app_logic)
    changed = []
    logic.onResponseChanged = lambda browser, result: changed.append(result["response"]["category"])
    nodes = logic.loadFollowup(pgbm_run["output"], name="PGBM-01")
    result = logic.result()
    baseline_spd = result["timepoints"][0]["sum_of_products_mm2"]
    short_mm = result["timepoints"][1]["lesions"][0]["diameters"]["short_mm"]
    assert result["response"]["category"] == "SD"
    long_line = nodes.lines("Post_Scan_T1", 1, RanoLines.LONG)[0]

    # Shorter: 20 x 38 mm is 52 % below the baseline's 44 x 36 mm, a partial response.
    drag_end(long_line, 20.0)
    assert RanoLines.lineLengthMm(long_line) == pytest.approx(20.0, abs=1e-6)
    post = table_rows(nodes.tableNode)[1]
    assert post["SPD"] == pytest.approx(round(20.0 * short_mm, 1), abs=0.05)
    assert post["Response"] == "PR" and logic.response()["category"] == "PR"
    assert table_rows(nodes.resultsTableNode)[0]["Value"].startswith("Partial response")
    assert (post["SPD"] - baseline_spd) / baseline_spd < -0.5
    diameters = logic.result()["timepoints"][1]["lesions"][0]["diameters"]
    assert diameters["edited"] and diameters["long_mm"] == pytest.approx(short_mm)  # the longer of the two
    # The result node holds the reader's measurement (what a saved scene keeps).
    saved = json.loads(nodes.resultTextNode.GetText())
    assert saved["response"]["category"] == "PR" and saved["timepoints"][1]["lesions"][0]["diameters"]["edited"]

    # Longer: 60 x 38 mm is 44 % above the nadir, progression.
    drag_end(long_line, 60.0)
    assert table_rows(nodes.tableNode)[1]["Response"] == "PD" and logic.response()["category"] == "PD"
    assert changed[0] == "PR" and changed[-1] == "PD"
    # The baseline's lines and numbers are untouched.
    assert table_rows(nodes.tableNode)[0]["SPD"] == baseline_spd


# --- (c) save and reload ------------------------------------------------------------------------------

@needs_pgbm
def test_a_saved_and_reloaded_scene_keeps_the_browser_the_lines_and_the_readers_measurement(mrml, pgbm_run, tmp_path):
    add_markups_logic(mrml)
    logic = FollowupLogic(mrml.scene, mrml.app_logic)
    nodes = logic.loadFollowup(pgbm_run["output"], name="PGBM-01")
    drag_end(nodes.lines("Post_Scan_T1", 1, RanoLines.LONG)[0], 20.0)
    assert logic.response()["category"] == "PR"
    lengths = {line.GetName(): RanoLines.lineLengthMm(line) for line in nodes.lineNodes}
    identities = {line.GetName(): RanoLines.lineIdentity(line) for line in nodes.lineNodes}
    nodes.browserNode.SetSelectedItemNumber(0)

    fresh = save_and_reload(mrml, tmp_path / "scene")
    try:
        reloaded_logic = FollowupLogic(fresh.scene, fresh.app_logic)
        [browser] = reloaded_logic.followups()
        reloaded = reloaded_logic.restoreFollowup(browser)
        sequence = reloaded.segmentationSequence
        assert browser.GetNumberOfItems() == 2 and browser.GetSelectedItemNumber() == 0
        assert [sequence.GetNthIndexValue(i) for i in range(2)] == ["0", "157"]
        assert sequence.GetIndexUnit() == "days" and set(reloaded.volumeSequences) == {"t1ce"}
        assert {line.GetName(): RanoLines.lineLengthMm(line) for line in reloaded.lineNodes} == pytest.approx(lengths)
        assert {line.GetName(): RanoLines.lineIdentity(line) for line in reloaded.lineNodes} == identities
        assert reloaded_logic.response()["category"] == "PR"  # the reader's measurement came back with the scene
        assert table_rows(reloaded.tableNode)[1]["Response"] == "PR"

        # The browser still steps through scans and segmentations ...
        result = reloaded_logic.result()
        for index, tp in enumerate(result["timepoints"]):
            browser.SetSelectedItemNumber(index)
            written = sitk.GetArrayFromImage(sitk.ReadImage(str(pgbm_run["output"] / tp["files"]["segmentation"])))
            assert et_voxels(reloaded.segmentationNode, reloaded.volumeNode("t1ce")) == np.count_nonzero(written == 4)
        # ... and the lines are followed again: a drag in the reloaded scene judges the response again.
        drag_end(reloaded.lines("Post_Scan_T1", 1, RanoLines.LONG)[0], 60.0)
        assert reloaded_logic.response()["category"] == "PD"
        assert table_rows(reloaded.tableNode)[1]["Response"] == "PD"
    finally:
        fresh.scene.Clear(True)


@needs_pgbm
def test_the_recurrence_map_is_an_overlay_with_its_legend_and_probability_in_words(mrml, pgbm_run, tmp_path):
    """PGBM-01's two dated scans: followup.json's recurrence entry reaches the scene as a coloured overlay
    on the baseline's grid with a legend, the probability in words, the model card one call away, and a
    saved scene keeps it."""
    logic = FollowupLogic(mrml.scene, mrml.app_logic)
    nodes = logic.loadFollowup(pgbm_run["output"], name="PGBM-01")
    recurrence = logic.recurrence()
    written = readFollowup(pgbm_run["output"])["recurrence"]
    assert recurrence["available"] and recurrence["probability"] == written["probability"]
    assert 0.0 <= recurrence["probability"] <= 1.0 and "P(recurrence)" in recurrence["sentence"]
    card = logic.recurrenceModelCard()
    assert card.is_file() and "simulat" in card.read_text(encoding="utf-8")
    map_node = logic.recurrenceMapNode()
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(pgbm_run["output"] / written["map"])))
    np.testing.assert_allclose(slicer.util.arrayFromVolume(map_node), expected, atol=1e-6)
    baseline_scan = nodes.volumeSequences["t1ce"].GetNthDataNode(0)
    assert map_node.GetImageData().GetDimensions() == baseline_scan.GetImageData().GetDimensions()
    display = map_node.GetDisplayNode()
    assert display.GetColorNode().GetName() == "GliomaSuite recurrence probability"
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0) and display.GetApplyThreshold()
    legend = logic.recurrenceLegendNode()
    assert legend is not None and legend.GetTitleText() == "P(tumour at next visit)"
    assert legend.GetPrimaryDisplayNode() is display
    composite = mrml.scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")  # as Slicer's slice views have
    logic.showRecurrenceMap()
    assert composite.GetForegroundVolumeID() == map_node.GetID() and composite.GetForegroundOpacity() == 0.5
    logic.showRecurrenceMap(show=False)
    assert composite.GetForegroundVolumeID() is None
    results = {row["Item"]: row["Value"] for row in table_rows(nodes.resultsTableNode)}
    assert results["Recurrence"] == written["sentence"]

    fresh = save_and_reload(mrml, tmp_path / "scene")
    try:
        reloaded_logic = FollowupLogic(fresh.scene, fresh.app_logic)
        [browser] = reloaded_logic.followups()
        reloaded_logic.restoreFollowup(browser)
        again = reloaded_logic.recurrenceMapNode()
        np.testing.assert_allclose(slicer.util.arrayFromVolume(again), expected, atol=1e-6)
        assert reloaded_logic.recurrence()["probability"] == written["probability"]
    finally:
        fresh.scene.Clear(True)


# --- (d) cancel, (e) bad input ------------------------------------------------------------------------

@needs_pgbm
def test_cancel_stops_the_whole_process_tree_and_leaves_no_follow_up(mrml, tmp_path):
    # Slicer starts the core through PythonSlicer, a launcher that runs the real interpreter as its
    # child; a shell script plays that part here, so Cancel has a tree to stop, not one process.
    launcher = tmp_path / "PythonSlicer"
    launcher.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"\n')
    launcher.chmod(0o755)
    logic = FollowupLogic(mrml.scene, mrml.app_logic, python=str(launcher))
    scene_before = node_ids(mrml.scene)
    output = tmp_path / "followup"
    progress, finished = [], []
    process = logic.startFollowup(pgbm_timepoints(), outputFolder=output, labels="binary", modality="t1ce",
                                  onProgress=lambda fraction, message: progress.append(message),
                                  onFinished=finished.append)
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
    assert outcome.nodes is None and not outcome.errorMessage
    assert not (output / "followup.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a half-written follow-up was left"
    assert node_ids(mrml.scene) == scene_before


@needs_ucsf
def test_one_time_point_is_refused_in_one_sentence_and_the_scene_is_left_alone(mrml, tmp_path):
    logic = FollowupLogic(mrml.scene, mrml.app_logic)
    scene_before = node_ids(mrml.scene)
    outcome, _ = run_followup(logic, [TimePointInput(mask=UCSF_MAPS[0])], outputFolder=tmp_path / "followup")

    assert outcome.state == FAILED and outcome.nodes is None
    assert "at least two time points" in outcome.errorMessage and "Traceback" not in outcome.errorMessage
    assert outcome.errorMessage.count(". ") <= 1, outcome.errorMessage  # one sentence (with its fix)
    assert node_ids(mrml.scene) == scene_before and not (tmp_path / "followup").exists()
    with pytest.raises(GliomaSuiteError, match="No follow-up is loaded"):
        logic.result()


def test_time_points_the_tab_cannot_export_are_refused_before_anything_runs(mrml):
    logic = FollowupLogic(mrml.scene, mrml.app_logic)
    with pytest.raises(GliomaSuiteError, match="No time point"):
        logic.startFollowup([])
    with pytest.raises(GliomaSuiteError, match="neither images nor a label map"):
        logic.startFollowup([TimePointInput(date="2024-01-01"), TimePointInput(date="2024-02-01")])
    empty = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(GliomaSuiteError, match="holds no image"):
        logic.startFollowup([TimePointInput({"t1ce": empty}), TimePointInput({"t1ce": empty})])
    assert not logic.isRunning


def test_the_follow_up_glue_imports_without_pytorch():
    """Slicer loads the module before PyTorch is installed; comparing label maps needs none."""
    module_dir = Path(__file__).resolve().parents[2] / "GliomaSuite"
    code = ("import sys; sys.modules['torch'] = None; sys.path.insert(0, sys.argv[1]); "
            "import GliomaSuiteLib.FollowupLogic, GliomaSuiteLib.RanoLines")
    result = subprocess.run([sys.executable, "-c", code, str(module_dir)], capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert result.returncode == 0, result.stderr
