"""The Survival tab's logic on a real case: segmentation + age -> the core's estimate in Slicer's nodes.

A BraTS case's T1ce is loaded by Slicer's Volumes logic and its expert label map becomes a
segmentation through GliomaSuiteLib's converter, as a Segment result does. The numbers in the
table and plot nodes are checked against the core scoring the label-map *file* (``score_label_map``,
what ``gliomasuite survival`` runs), so the segmentation round trip, the features and the scoring
are all covered. Edits are made as the Segment Editor makes them (Slicer's segmentation logic).

The charts are drawn offscreen by :class:`OffscreenPlotView`, which maps plot series nodes onto a
VTK chart the way Slicer's plot view (qMRMLPlotView, which needs Qt) does. Set GLIOMASUITE_SCREENSHOTS
to a folder to keep the PNGs there.
"""

import ast
import os
import shutil
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import vtk
from vtkmodules.util import numpy_support
from vtkmodules.vtkChartsCore import vtkChart, vtkChartXY, vtkPlotPoints
from vtkmodules.vtkRenderingContext2D import vtkPen
from vtkmodules.vtkViewsContext2D import vtkContextView

from gliomasuite.errors import GliomaSuiteError
from gliomasuite.labels import ED
from gliomasuite.survival.features import label_map_features
from gliomasuite.survival.score import MONTH_DAYS, load_models, score_features, score_label_map
from GliomaSuiteLib import image_on_volume_grid, labels_from_segmentation_node, segmentation_node_from_labels
from GliomaSuiteLib.SurvivalLogic import (
    COHORT_COLOUR,
    CURVES_VIEW_TAG,
    PATIENT_COLOUR,
    RESULTS_VIEW_TAG,
    SIMILAR_COLOUR,
    SOM_PATIENT,
    SOM_POOLED,
    SOM_VIEW_TAG,
    SURVIVAL_LAYOUT_ID,
    SurvivalLogic,
    stepCurve,
)
from conftest import capture_window
from test_segment_tab import erase_upper_half

CASE = "BraTS2021_01476"
DATA = Path(os.environ.get("GLIOMASUITE_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
CASE_DIR = DATA / "brats" / CASE
T1CE_FILE = CASE_DIR / f"{CASE}_t1ce.nii.gz"
TRUTH_FILE = CASE_DIR / f"{CASE}_seg.nii.gz"
AGE = 60.0


def needs_case(test):
    """Marks a test that needs the real case (skipped, with the reason, where it is absent)."""
    skip = pytest.mark.skipif(not (T1CE_FILE.is_file() and TRUTH_FILE.is_file()),
                              reason=f"needs the BraTS case {CASE} in {CASE_DIR} (set GLIOMASUITE_DATA)")
    return pytest.mark.realdata(skip(test))


NODE_CLASSES = ("vtkMRMLTableNode", "vtkMRMLPlotSeriesNode", "vtkMRMLPlotChartNode")


@pytest.fixture
def case(mrml):
    """The case's T1ce (loaded as Slicer loads a file) and its expert segmentation on that grid."""
    t1ce = mrml.logic("Volumes").AddArchetypeVolume(str(T1CE_FILE), f"{CASE}_t1ce", 0)
    assert t1ce is not None, f"Slicer could not load {T1CE_FILE}"
    segmentation = segmentation_node_from_labels(mrml.scene, sitk.ReadImage(str(TRUTH_FILE)), t1ce, f"{CASE} tumour")
    return t1ce, segmentation


@pytest.fixture(scope="module")
def core_result(tmp_path_factory):
    """What the core's ``survival`` command computes for the label-map file and the same age."""
    return score_label_map(TRUTH_FILE, AGE, tmp_path_factory.mktemp("core"))


def column(table_node, name) -> np.ndarray:
    array = table_node.GetTable().GetColumnByName(name)
    assert array is not None, f"no column {name!r} in {table_node.GetName()}"
    return numpy_support.vtk_to_numpy(array).astype(np.float64)


def text_rows(table_node) -> dict:
    table = table_node.GetTable()
    return {table.GetValue(row, 0).ToString(): table.GetValue(row, 1).ToString()
            for row in range(table.GetNumberOfRows())}


def chart_series(chart) -> dict:
    return {chart.GetNthPlotSeriesNode(i).GetName(): chart.GetNthPlotSeriesNode(i)
            for i in range(chart.GetNumberOfPlotSeriesNodes())}


def core_of_labels(labels, reference, age=AGE) -> dict:
    """The core's result for a label-map array on the reference grid (the user's edits included)."""
    image = image_on_volume_grid(labels, reference)
    full, reduced = load_models()
    return score_features(label_map_features(image)["shape"], full, reduced, age=age)


def snapshot(scene) -> dict:
    """Every table, series and chart node's content and modification time, by node ID."""
    state = {}
    for class_name in NODE_CLASSES:
        for index in range(scene.GetNumberOfNodesByClass(class_name)):
            node = scene.GetNthNodeByClass(index, class_name)
            if class_name == "vtkMRMLTableNode":
                table = node.GetTable()
                content = [[table.GetValue(r, c).ToString() for c in range(table.GetNumberOfColumns())]
                           for r in range(table.GetNumberOfRows())]
            elif class_name == "vtkMRMLPlotChartNode":
                content = [node.GetTitle(),
                           [node.GetNthPlotSeriesNodeID(i) for i in range(node.GetNumberOfPlotSeriesNodes())]]
            else:
                content = [node.GetName(), node.GetTableNodeID(), node.GetXColumnName(), node.GetYColumnName()]
            state[node.GetID()] = (node.GetMTime(), content)
    return state


def clear_tumour(node):
    for segment_id in ("NCR", "ED", "ET"):
        slicer.vtkSlicerSegmentationsModuleLogic.ClearSegment(node, segment_id)


class OffscreenPlotView:
    """A Slicer plot view drawing a vtkMRMLPlotChartNode offscreen: what qMRMLPlotView does with the
    chart's series (type, colour, width, line style, marker), title, legend, axis titles and ranges,
    minus Qt."""

    LINE_STYLES = {
        slicer.vtkMRMLPlotSeriesNode.LineStyleNone: vtkPen.NO_PEN,
        slicer.vtkMRMLPlotSeriesNode.LineStyleSolid: vtkPen.SOLID_LINE,
        slicer.vtkMRMLPlotSeriesNode.LineStyleDash: vtkPen.DASH_LINE,
        slicer.vtkMRMLPlotSeriesNode.LineStyleDot: vtkPen.DOT_LINE,
    }
    MARKERS = {
        slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone: vtkPlotPoints.NONE,
        slicer.vtkMRMLPlotSeriesNode.MarkerStyleCross: vtkPlotPoints.CROSS,
        slicer.vtkMRMLPlotSeriesNode.MarkerStylePlus: vtkPlotPoints.PLUS,
        slicer.vtkMRMLPlotSeriesNode.MarkerStyleSquare: vtkPlotPoints.SQUARE,
        slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle: vtkPlotPoints.CIRCLE,
        slicer.vtkMRMLPlotSeriesNode.MarkerStyleDiamond: vtkPlotPoints.DIAMOND,
    }

    def __init__(self, size=(900, 560)):
        self.view = vtkContextView()
        self.window = self.view.GetRenderWindow()
        self.window.SetOffScreenRendering(True)
        self.window.SetMultiSamples(0)
        self.window.SetSize(*size)
        self.chart = vtkChartXY()
        self.view.GetScene().AddItem(self.chart)

    def show(self, chart_node):
        self.chart.ClearPlots()
        for index in range(chart_node.GetNumberOfPlotSeriesNodes()):
            series = chart_node.GetNthPlotSeriesNode(index)
            plot = self.chart.AddPlot(vtkChart.LINE)  # Slicer draws lines and scatter with vtkPlotLine
            plot.SetInputData(series.GetTableNode().GetTable(), series.GetXColumnName(), series.GetYColumnName())
            plot.SetColorF(*series.GetColor())
            plot.SetWidth(series.GetLineWidth())
            plot.GetPen().SetLineType(self.LINE_STYLES[series.GetLineStyle()])
            plot.SetMarkerStyle(self.MARKERS[series.GetMarkerStyle()])
            plot.SetMarkerSize(series.GetMarkerSize())
            plot.SetLabel(series.GetName())
        self.chart.SetTitle(chart_node.GetTitle())
        self.chart.SetShowLegend(chart_node.GetLegendVisibility())
        for axis_id, title, auto, get_range in (
                (vtk.vtkAxis.BOTTOM, chart_node.GetXAxisTitle(), chart_node.GetXAxisRangeAuto(),
                 chart_node.GetXAxisRange),
                (vtk.vtkAxis.LEFT, chart_node.GetYAxisTitle(), chart_node.GetYAxisRangeAuto(),
                 chart_node.GetYAxisRange)):
            axis = self.chart.GetAxis(axis_id)
            axis.SetTitle(title)
            axis.SetGridVisible(chart_node.GetGridVisibility())
            if not auto:
                axis.SetBehavior(vtk.vtkAxis.FIXED)
                axis.SetUnscaledRange(*get_range())

    def capture(self, png_path) -> np.ndarray:
        return capture_window(self.window, png_path)

    def finalize(self):
        self.window.Finalize()


@pytest.fixture
def plot_view(offscreen_rendering):
    view = OffscreenPlotView()
    yield view
    view.finalize()


def keep_screenshot(png):
    if os.environ.get("GLIOMASUITE_SCREENSHOTS"):
        shutil.copy(png, Path(os.environ["GLIOMASUITE_SCREENSHOTS"]) / png.name)


def colour_pixels(rgb, colour, tolerance=40) -> int:
    target = np.asarray(colour) * 255
    return int((np.abs(rgb.astype(int) - target).max(axis=2) < tolerance).sum())


# --------------------------------------------------------------------------------------------------

@needs_case
def test_estimate_shows_the_core_result_as_curves_som_and_results(mrml, case, core_result):
    t1ce, segmentation = case
    outcome = SurvivalLogic(mrml.scene).estimate(segmentation, AGE)
    result = outcome.result

    # The same estimate as the core gives for the label-map file.
    for key in ("model", "inputs", "risk_score", "risk_group", "median_survival", "p_alive", "brats_class",
                "curve", "cohort", "sentence", "warnings", "features", "location"):
        assert result[key] == core_result[key], key
    assert result["som"]["node"] == core_result["som"]["node"]

    # The patient's curve with its band, in months and days.
    curve = core_result["curve"]
    np.testing.assert_array_equal(column(outcome.curveTable, "Days"), curve["times_days"])
    np.testing.assert_allclose(column(outcome.curveTable, "Months"), np.asarray(curve["times_days"]) / MONTH_DAYS)
    for name, key in (("Survival", "survival"), ("Lower 95%", "lower"), ("Upper 95%", "upper")):
        np.testing.assert_array_equal(column(outcome.curveTable, name), curve[key], err_msg=name)
    assert outcome.curveTable.GetColumnUnitLabel("Months") == "months"
    # The median read off the table is the core's.
    survival, days = column(outcome.curveTable, "Survival"), column(outcome.curveTable, "Days")
    assert days[np.argmax(survival <= 0.5)] == core_result["median_survival"]["days"]

    # Cohort and similar patients: the core's Kaplan-Meier curves, drawn as steps.
    for table, km in ((outcome.cohortTable, core_result["cohort"]["km"]),
                      (outcome.similarTable, core_result["som"]["neighbourhood"]["km"])):
        step_days, step_survival = stepCurve(km["times"], km["survival"])
        np.testing.assert_array_equal(column(table, "Days"), step_days)
        np.testing.assert_array_equal(column(table, "Survival"), step_survival)
        np.testing.assert_array_equal(column(table, "Survival")[::2], km["survival"])  # every value of the curve

    # The chart draws them: series, tables, columns, axes.
    chart = outcome.chartNode
    assert chart.GetXAxisTitle() == "Months" and chart.GetYAxisTitle() == "Probability alive"
    series = chart_series(chart)
    row, col = core_result["som"]["node"]
    hood_n = core_result["som"]["neighbourhood"]["n"]
    expected = {
        "This patient (Cox model)": (outcome.curveTable, "Survival"),
        "95% band (approximate), lower": (outcome.curveTable, "Lower 95%"),
        "95% band (approximate), upper": (outcome.curveTable, "Upper 95%"),
        f"Cohort, Kaplan-Meier (n={core_result['cohort']['n']})": (outcome.cohortTable, "Survival"),
        f"Similar patients, SOM node {row + 1},{col + 1} and neighbours (n={hood_n})":
            (outcome.similarTable, "Survival"),
    }
    assert list(series) == list(expected)
    for name, (table, y_column) in expected.items():
        assert series[name].GetTableNode() is table and series[name].GetXColumnName() == "Months", name
        assert series[name].GetYColumnName() == y_column, name
    assert series["95% band (approximate), lower"].GetLineStyle() == slicer.vtkMRMLPlotSeriesNode.LineStyleDash

    # The SOM grid: every node once, the patient's node highlighted where the core put the patient.
    som = outcome.somTable
    rows, cols = core_result["som"]["grid"]
    assert len(column(som, "Row")) == rows * cols
    np.testing.assert_array_equal(column(som, "Patients").reshape(rows, cols), core_result["som"]["grid_counts"])
    patient = column(som, SOM_PATIENT)
    assert np.count_nonzero(~np.isnan(patient)) == 1
    index = int(np.flatnonzero(~np.isnan(patient))[0])
    assert (column(som, "Row")[index], column(som, "Column")[index]) == (row + 1, col + 1)
    pooled = ~np.isnan(column(som, SOM_POOLED))
    assert column(som, "Patients")[pooled].sum() == hood_n
    som_series = chart_series(outcome.somChartNode)
    assert f"{SOM_PATIENT} ({row + 1},{col + 1})" in som_series
    assert all(s.GetPlotType() == slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter for s in som_series.values())

    # The results table, in words.
    text = text_rows(outcome.resultsTable)
    median = core_result["median_survival"]
    assert text["Median survival"] == (f"{median['months']:.1f} months (95% CI {median['ci95_months'][0]:.1f} "
                                       f"to {median['ci95_months'][1]:.1f})")
    for months in ("6", "12", "18", "24"):
        assert text[f"Alive at {months} months"].startswith(f"{100 * core_result['p_alive'][months]['p']:.0f}%")
    assert text["BraTS survival class"] == core_result["brats_class"]
    assert text["Risk group"].startswith(core_result["risk_group"] + " ")
    assert text["Model"].startswith(f"{core_result['model']['name']}, full model")
    assert text["Extent of resection"].startswith("not an input of this model")
    assert text["Summary"] == core_result["sentence"]
    assert text["Age"] == "60 years"


@needs_case
def test_charts_render_offscreen(mrml, case, plot_view, tmp_path):
    _, segmentation = case
    outcome = SurvivalLogic(mrml.scene).estimate(segmentation, AGE)

    plot_view.show(outcome.chartNode)
    curves = plot_view.capture(tmp_path / "survival-tab-curves.png")
    plot_view.show(outcome.somChartNode)
    som = plot_view.capture(tmp_path / "survival-tab-som.png")
    for png in ("survival-tab-curves.png", "survival-tab-som.png"):
        keep_screenshot(tmp_path / png)

    assert colour_pixels(curves, PATIENT_COLOUR) > 500, "the patient's curve hardly shows"
    assert colour_pixels(curves, SIMILAR_COLOUR) > 200, "the similar patients' curve hardly shows"
    assert colour_pixels(curves, COHORT_COLOUR) > 200, "the cohort curve hardly shows"
    assert colour_pixels(som, PATIENT_COLOUR) > 100, "the patient's SOM node is not highlighted"
    assert colour_pixels(som, SIMILAR_COLOUR) > 20, "the pooled nodes are not marked"


@needs_case
def test_estimating_again_updates_the_same_nodes(mrml, case):
    _, segmentation = case
    logic = SurvivalLogic(mrml.scene)
    assert not logic.hasEstimate(segmentation)
    first = logic.estimate(segmentation, AGE)
    assert logic.hasEstimate(segmentation)
    nodes = {key: node.GetID() for key, node in logic.survivalNodes(segmentation).items()}
    counts = {name: mrml.scene.GetNumberOfNodesByClass(name) for name in NODE_CLASSES}
    first_curve = column(first.curveTable, "Survival")

    older = logic.estimate(segmentation, 75)

    assert {key: node.GetID() for key, node in logic.survivalNodes(segmentation).items()} == nodes
    assert {name: mrml.scene.GetNumberOfNodesByClass(name) for name in NODE_CLASSES} == counts
    assert older.chartNode is first.chartNode and older.resultsTable is first.resultsTable
    assert older.chartNode.GetNumberOfPlotSeriesNodes() == 5
    # An older patient: a lower curve everywhere after time 0.
    assert np.all(column(older.curveTable, "Survival")[1:] < first_curve[1:])
    assert text_rows(older.resultsTable)["Age"] == "75 years"


@needs_case
def test_edits_re_estimate_with_the_same_age(mrml, case):
    t1ce, segmentation = case
    logic = SurvivalLogic(mrml.scene)
    before = logic.estimate(segmentation, AGE)
    wt_before = before.result["inputs"]["WT_vol_mm3"]

    # Debounced as in the panel: edits only ask for an update; one update follows the burst.
    requests, updates, errors = [], [], []
    logic.followEdits(segmentation, schedule=requests.append, onUpdated=updates.append,
                      onError=lambda node, message: errors.append(message))
    erased = erase_upper_half(segmentation, "ED", ED, t1ce)
    erased += erase_upper_half(segmentation, "ED", ED, t1ce)
    assert erased > 0 and requests and not updates
    requests[-1]()
    assert len(updates) == 1 and not errors
    after = updates[0]

    assert after.chartNode is before.chartNode
    edited = labels_from_segmentation_node(segmentation, t1ce)
    core = core_of_labels(edited, t1ce)
    assert after.result["inputs"]["age"] == AGE
    assert after.result["inputs"]["WT_vol_mm3"] == core["inputs"]["WT_vol_mm3"] == wt_before - erased
    np.testing.assert_array_equal(column(after.curveTable, "Survival"), core["curve"]["survival"])
    assert after.result["median_survival"] == core["median_survival"]
    assert text_rows(after.resultsTable)["Summary"] == core["sentence"]
    assert not np.array_equal(column(after.curveTable, "Survival"), before.result["curve"]["survival"])

    # Without a scheduler each edit estimates at once. No tumour core left: the reduced model, and why.
    logic.followEdits(segmentation, onUpdated=updates.append, onError=lambda node, message: errors.append(message))
    for segment_id in ("NCR", "ET"):
        slicer.vtkSlicerSegmentationsModuleLogic.ClearSegment(segmentation, segment_id)
    assert not errors
    reduced = updates[-1]
    assert reduced.result["model"]["variant"] == "reduced"
    model_text = text_rows(reduced.resultsTable)["Model"]
    assert "reduced model" in model_text and "TC_sphericity" in model_text
    assert column(reduced.curveTable, "Survival").tolist() == core_of_labels(
        labels_from_segmentation_node(segmentation, t1ce), t1ce)["curve"]["survival"]

    # Stopped: edits change nothing any more.
    logic.stopFollowingEdits(segmentation)
    count = len(updates)
    erase_upper_half(segmentation, "ED", ED, t1ce)
    assert len(updates) == count


@needs_case
@pytest.mark.parametrize("age, message", [
    (None, "age is missing"),
    ("", "age is missing"),
    (float("nan"), "age is missing"),
    ("sixty", "not a number"),
    (150, "age is 150 years, outside the valid range"),
    (9, "age is 9 years, outside the valid range"),
])
def test_a_missing_or_impossible_age_is_refused_and_changes_nothing(mrml, case, age, message):
    _, segmentation = case
    logic = SurvivalLogic(mrml.scene)
    logic.estimate(segmentation, AGE)
    before = snapshot(mrml.scene)

    with pytest.raises(GliomaSuiteError, match=message):
        logic.estimate(segmentation, age)
    assert snapshot(mrml.scene) == before


@needs_case
def test_a_segmentation_without_tumour_is_refused_and_changes_nothing(mrml, case):
    t1ce, segmentation = case
    logic = SurvivalLogic(mrml.scene)
    logic.estimate(segmentation, AGE)

    # A new, empty segmentation: refused, and no node made for it.
    empty = segmentation_node_from_labels(mrml.scene, np.zeros(sitk.GetArrayViewFromImage(
        sitk.ReadImage(str(TRUTH_FILE))).shape, np.uint8), t1ce, "empty")
    before = snapshot(mrml.scene)
    with pytest.raises(GliomaSuiteError, match="Segmentation 'empty' contains no tumour"):
        logic.estimate(empty, AGE)
    assert snapshot(mrml.scene) == before and not logic.survivalNodes(empty)

    # The followed segmentation erased (three edits, one update as in the panel): the error is
    # reported, the last estimate stays on show.
    requests, errors, updates = [], [], []
    logic.followEdits(segmentation, schedule=requests.append, onUpdated=updates.append,
                      onError=lambda node, message: errors.append((node, message)))
    clear_tumour(segmentation)
    requests[-1]()
    assert not updates and len(errors) == 1
    assert errors[0][0] is segmentation and "contains no tumour" in errors[0][1]
    assert snapshot(mrml.scene) == before


@needs_case
def test_survival_layout_puts_the_charts_next_to_the_3d_view(mrml, case):
    _, segmentation = case
    layout_logic = slicer.vtkMRMLLayoutLogic()  # Slicer's layout manager runs one on the scene
    layout_logic.SetMRMLScene(mrml.scene)
    layout_node = layout_logic.GetLayoutNode()
    logic = SurvivalLogic(mrml.scene)
    outcome = logic.estimate(segmentation, AGE)

    curves_view, som_view, results_view = logic.showInLayout(layout_node, outcome)

    assert layout_node.GetViewArrangement() == SURVIVAL_LAYOUT_ID
    assert curves_view.GetPlotChartNodeID() == outcome.chartNode.GetID()
    assert som_view.GetPlotChartNodeID() == outcome.somChartNode.GetID()
    assert results_view.GetTableNodeID() == outcome.resultsTable.GetID()
    assert not curves_view.GetDoPropagatePlotChartSelection() and not results_view.GetDoPropagateTableSelection()
    top_row, bottom_row = ElementTree.fromstring(layout_node.GetCurrentLayoutDescription()).findall("item/layout")
    views = [(view.get("class"), view.get("singletontag")) for view in top_row.iter("view")]
    assert views == [("vtkMRMLViewNode", "1"), ("vtkMRMLPlotViewNode", CURVES_VIEW_TAG),
                     ("vtkMRMLPlotViewNode", SOM_VIEW_TAG)]
    bottom_views = [view.get("singletontag") for view in bottom_row.iter("view")]
    assert bottom_views == ["Red", "Yellow", "Green", RESULTS_VIEW_TAG]
    assert mrml.scene.GetSingletonNode("1", "vtkMRMLViewNode") is not None
    assert mrml.scene.GetSingletonNode("Red", "vtkMRMLSliceNode") is not None

    # Showing it again (a new estimate) reuses the layout and its views.
    view_nodes = mrml.scene.GetNumberOfNodesByClass("vtkMRMLAbstractViewNode")
    assert logic.showInLayout(layout_node, logic.estimate(segmentation, 70)) == (curves_view, som_view, results_view)
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLAbstractViewNode") == view_nodes


def test_the_panel_binds_the_survival_inputs_to_parameters_that_exist():
    """The Survival section's widgets name parameters of the module's parameter node (GliomaSuite.py
    needs Qt, so it is read, not imported)."""
    module_dir = Path(__file__).resolve().parents[2] / "GliomaSuite"
    tree = ast.parse((module_dir / "GliomaSuite.py").read_text())
    parameter_class = next(node for node in tree.body
                           if isinstance(node, ast.ClassDef) and node.name == "GliomaSuiteParameterNode")
    parameters = {node.target.id: node for node in parameter_class.body if isinstance(node, ast.AnnAssign)}
    ui = ElementTree.parse(module_dir / "Resources" / "UI" / "GliomaSuite.ui")
    survival = next(w for w in ui.iter("widget") if w.get("name") == "survivalCollapsibleButton")
    bound = {}
    for widget in survival.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[widget.get("name")] = prop.find("string").text
    assert bound == {"survivalSegmentationSelector": "segmentation", "ageSpinBox": "age",
                     "followEditsCheckBox": "followEdits"}
    assert set(bound.values()) <= set(parameters)
    # No age is assumed: the default is the spin box's minimum, shown as "not entered".
    assert ast.literal_eval(parameters["age"].value) == 0.0
    age_box = next(w for w in survival.iter("widget") if w.get("name") == "ageSpinBox")
    properties = {p.get("name"): p for p in age_box.findall("property")}
    assert float(properties["minimum"].find("double").text) == 0.0
    assert properties["specialValueText"].find("string").text == "not entered"
