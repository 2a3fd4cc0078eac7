"""The Survival tab's MRML logic: a tumour segmentation and an age in, survival as Slicer tables and plots out.

What happens on Estimate: the segmentation's label map is taken on its reference (T1ce) grid, edits
included (:mod:`.SegmentationNodes`); the core measures its shape exactly as it does for a label-map
file (``gliomasuite.survival.features``) and scores it with the shipped Cox model and self-organising
map (``gliomasuite.survival.score``), so the numbers are those of ``gliomasuite survival``. The
result fills, in the scene:

* a chart of the patient's survival curve with its approximate 95% band, the cohort's Kaplan-Meier
  curve and that of the most similar cohort patients (the patient's SOM node and its neighbours);
* a chart of the 10 x 10 SOM grid, nodes sized by their number of cohort patients, the patient's
  node in red and the nodes pooled into the "similar patients" curve ringed in blue;
* the tables these charts draw, and a results table (median with its interval, P(alive) at 6, 12,
  18 and 24 months, BraTS class, risk group, model used and why, warnings, the result in words).

The nodes belong to the segmentation (node references), so estimating again, with another age or
after an edit, updates the same nodes. A patient who cannot be scored (age missing or out of range,
no tumour) raises :class:`GliomaSuiteError` with the reason before any node changes.

Extent of resection is not asked for: the shipped models use age and the tumour's measurements
only (most of the cohort has no resection recorded), and the results table says so rather than take
a value that would change nothing.

Usage::

    logic = SurvivalLogic(slicer.mrmlScene)
    outcome = logic.estimate(segmentationNode, age=61)     # GliomaSuiteError with the fix if it cannot
    outcome.result["median_survival"], outcome.chartNode, outcome.somChartNode, outcome.resultsTable
    logic.followEdits(segmentationNode)                    # estimate again (same age) after each edit
    logic.showInLayout(layoutNode, outcome)                # 3D view, curves and SOM side by side

MRML only (no Qt), so it runs on a bare ``slicer-core`` scene as well as in Slicer.
"""

import logging
import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import numpy as np
import vtk
from vtkmodules.util import numpy_support

import slicer
from gliomasuite.errors import GliomaSuiteError
from gliomasuite.survival import cox
from gliomasuite.survival.features import FEATURE_REGIONS
from gliomasuite.survival.score import MONTH_DAYS, load_models, score_label_map

from .SegmentationNodes import image_on_volume_grid, labels_from_segmentation_node
from .SegmentLogic import _referenceVolume

#: Prefix of the node references from a segmentation to its survival nodes (role = prefix + key).
ROLE_PREFIX = "GliomaSuite.survival."

#: Column names of the curve tables. Kaplan-Meier tables hold the step curve as drawn: each time of
#: a drop appears twice, with the value before and after it.
MONTHS, DAYS, SURVIVAL, LOWER, UPPER = "Months", "Days", "Survival", "Lower 95%", "Upper 95%"
ITEM, VALUE = "Item", "Value"

#: Colours as in the core's PNG plot (gliomasuite.survival.plot), so the report and Slicer agree.
PATIENT_COLOUR = (0.839, 0.153, 0.157)
COHORT_COLOUR = (0.267, 0.267, 0.267)
SIMILAR_COLOUR = (0.122, 0.467, 0.706)

#: SOM nodes are drawn in five sizes by their number of cohort patients (the shipped map holds 0 to
#: 5 per node; the SOM table has the exact counts): (label, fewest, most, marker size, grey level).
SOM_COUNT_BINS = (
    ("Empty node", 0, 0, 4.0, 0.80),
    ("1 patient", 1, 1, 7.0, 0.65),
    ("2 patients", 2, 2, 10.0, 0.50),
    ("3 patients", 3, 3, 13.0, 0.35),
    ("4 or more patients", 4, math.inf, 16.0, 0.20),
)
SOM_PATIENT, SOM_POOLED = "This patient's node", "Pooled into 'similar patients'"

#: A layout with the 3D view and the two charts side by side above the three slice views and the
#: results table. Its plot and table views are GliomaSuite's own (singleton tags below), so they keep
#: showing the survival results when another module selects a chart or table for the standard views.
SURVIVAL_LAYOUT_ID = 56001
CURVES_VIEW_TAG, SOM_VIEW_TAG, RESULTS_VIEW_TAG = "GliomaSuiteSurvival", "GliomaSuiteSOM", "GliomaSuiteSurvivalResults"
SURVIVAL_LAYOUT = f"""
<layout type="vertical" split="true">
 <item splitSize="600">
  <layout type="horizontal" split="true">
   <item splitSize="400">
    <view class="vtkMRMLViewNode" singletontag="1">
     <property name="viewlabel" action="default">1</property>
    </view>
   </item>
   <item splitSize="500">
    <view class="vtkMRMLPlotViewNode" singletontag="{CURVES_VIEW_TAG}">
     <property name="viewlabel" action="default">S</property>
    </view>
   </item>
   <item splitSize="350">
    <view class="vtkMRMLPlotViewNode" singletontag="{SOM_VIEW_TAG}">
     <property name="viewlabel" action="default">M</property>
    </view>
   </item>
  </layout>
 </item>
 <item splitSize="400">
  <layout type="horizontal">
   <item>
    <view class="vtkMRMLSliceNode" singletontag="Red">
     <property name="orientation" action="default">Axial</property>
     <property name="viewlabel" action="default">R</property>
     <property name="viewcolor" action="default">#F34A33</property>
    </view>
   </item>
   <item>
    <view class="vtkMRMLSliceNode" singletontag="Yellow">
     <property name="orientation" action="default">Sagittal</property>
     <property name="viewlabel" action="default">Y</property>
     <property name="viewcolor" action="default">#EDD54C</property>
    </view>
   </item>
   <item>
    <view class="vtkMRMLSliceNode" singletontag="Green">
     <property name="orientation" action="default">Coronal</property>
     <property name="viewlabel" action="default">G</property>
     <property name="viewcolor" action="default">#6EB04B</property>
    </view>
   </item>
   <item>
    <view class="vtkMRMLTableViewNode" singletontag="{RESULTS_VIEW_TAG}">
     <property name="viewlabel" action="default">T</property>
    </view>
   </item>
  </layout>
 </item>
</layout>
"""

@dataclass
class SurvivalOutcome:
    """One estimate: the core's result and the nodes that show it."""

    result: dict                 # as gliomasuite.survival.score returns it, plus features and location
    chartNode: object            # survival curves (vtkMRMLPlotChartNode)
    somChartNode: object         # the SOM grid (vtkMRMLPlotChartNode)
    curveTable: object           # the patient's curve with its band
    cohortTable: object          # the cohort's Kaplan-Meier curve
    similarTable: object         # the similar patients' Kaplan-Meier curve
    somTable: object             # one row per SOM node
    resultsTable: object         # the numbers and words a user reads


@dataclass
class _Followed:
    node: object
    tags: list
    schedule: Optional[Callable[[Callable[[], None]], None]]
    onUpdated: Optional[Callable[[SurvivalOutcome], None]]
    onError: Optional[Callable[[object, str], None]]


class SurvivalLogic:
    """Estimates survival from a tumour segmentation and an age, into table and plot chart nodes.

    ``scene`` is the MRML scene; ``model`` a shipped survival model name or a model .json file
    (default: the shipped model, with its reduced companion for tumours without a core).
    """

    def __init__(self, scene, model: Optional[str] = None):
        self.scene = scene
        self.model = model
        self._models = None
        self._inputs: Dict[str, tuple] = {}       # segmentation ID -> (age, reference volume) last used
        self._followed: Dict[str, _Followed] = {}
        self._pending: set = set()

    # --- estimating --------------------------------------------------------------------------------

    def models(self):
        """(full, reduced) survival models, read once."""
        if self._models is None:
            self._models = load_models(self.model)
        return self._models

    def score(self, segmentationNode, age, referenceVolume=None) -> dict:
        """The core's survival result for a segmentation as it is now and an age; changes no node."""
        age = cox.check_value("age", age)
        reference = _referenceVolume(segmentationNode) or referenceVolume
        if reference is None:
            raise GliomaSuiteError(
                f"Segmentation '{segmentationNode.GetName()}' has no reference volume, so its tumour cannot be "
                "measured; select the T1ce it was drawn on in the Segment section, or set its reference geometry "
                "in the Segmentations module.")
        labels = labels_from_segmentation_node(segmentationNode, reference)
        if not np.isin(labels, FEATURE_REGIONS["WT"]).any():
            raise GliomaSuiteError(
                f"Segmentation '{segmentationNode.GetName()}' contains no tumour: its Necrotic core, Edema and "
                "Enhancing tumour segments are empty, so there is nothing to measure. Run Segment, or paint the "
                "tumour with the Segment Editor, then estimate again.")
        return score_label_map(image_on_volume_grid(labels, reference), age, models=self.models(),
                               source=segmentationNode.GetName())

    def estimate(self, segmentationNode, age, referenceVolume=None) -> SurvivalOutcome:
        """Score the segmentation with ``age`` (years) and show the result in its survival nodes.

        The tumour is measured on the segmentation's reference geometry volume (the T1ce for
        GliomaSuite's results), or on ``referenceVolume`` for a segmentation that names none (a
        .seg.nrrd loaded on its own). Raises :class:`GliomaSuiteError`, leaving every node as it
        was, when the patient cannot be scored.
        """
        result = self.score(segmentationNode, age, referenceVolume)
        self._inputs[segmentationNode.GetID()] = (result["inputs"]["age"], referenceVolume)
        return self._show(segmentationNode, result)

    # --- following edits ---------------------------------------------------------------------------

    def followEdits(self, segmentationNode, schedule: Optional[Callable[[Callable[[], None]], None]] = None,
                    onUpdated: Optional[Callable[[SurvivalOutcome], None]] = None,
                    onError: Optional[Callable[[object, str], None]] = None) -> None:
        """Estimate again, with the last age used for it, whenever the segmentation is edited.

        Without ``schedule`` each edit event estimates at once. With it, an edit calls
        ``schedule(update)`` and the estimate waits until ``update()`` is called, so a burst of
        brush strokes costs one estimate (the module's panel passes a restarting timer).
        ``onUpdated(outcome)`` follows each new estimate; ``onError(node, message)`` reports one
        that failed (the tumour erased, say), after which the nodes still show the last estimate.
        """
        self.stopFollowingEdits(segmentationNode)
        events = (slicer.vtkSegmentation.RepresentationModified, slicer.vtkSegmentation.SegmentModified,
                  slicer.vtkSegmentation.SegmentAdded, slicer.vtkSegmentation.SegmentRemoved)
        tags = [segmentationNode.AddObserver(event, self._onSegmentationEdited) for event in events]
        self._followed[segmentationNode.GetID()] = _Followed(segmentationNode, tags, schedule, onUpdated, onError)

    def stopFollowingEdits(self, segmentationNode=None) -> None:
        """Stop following one segmentation's edits, or every segmentation's."""
        ids = list(self._followed) if segmentationNode is None else [segmentationNode.GetID()]
        for nodeId in ids:
            followed = self._followed.pop(nodeId, None)
            if followed:
                for tag in followed.tags:
                    followed.node.RemoveObserver(tag)
            self._pending.discard(nodeId)

    def isFollowing(self, segmentationNode) -> bool:
        return segmentationNode.GetID() in self._followed

    def hasEstimate(self, segmentationNode) -> bool:
        """Whether this logic has estimated the segmentation (so knows the age to estimate again with)."""
        return segmentationNode.GetID() in self._inputs

    def updatePending(self) -> None:
        """Estimate again every followed segmentation edited since its last estimate."""
        pending, self._pending = self._pending, set()
        for nodeId in sorted(pending):
            followed = self._followed.get(nodeId)
            if followed is None or nodeId not in self._inputs:
                continue
            age, reference = self._inputs[nodeId]
            try:
                outcome = self.estimate(followed.node, age, reference)
            except GliomaSuiteError as error:
                if followed.onError:
                    followed.onError(followed.node, str(error))
                else:
                    logging.warning("GliomaSuite: survival not updated after an edit: %s", error)
                continue
            if followed.onUpdated:
                followed.onUpdated(outcome)

    def cleanup(self) -> None:
        """Stop following edits (on module close or scene close)."""
        self.stopFollowingEdits()
        self._inputs.clear()

    def _onSegmentationEdited(self, segmentationNode, event) -> None:
        if segmentationNode.GetScene() is None:  # removed from the scene: stop following it
            self.stopFollowingEdits(segmentationNode)
            return
        followed = self._followed.get(segmentationNode.GetID())
        if followed is None:
            return
        self._pending.add(segmentationNode.GetID())
        if followed.schedule:
            followed.schedule(self.updatePending)
        else:
            self.updatePending()

    # --- layout ------------------------------------------------------------------------------------

    def showInLayout(self, layoutNode, outcome: SurvivalOutcome):
        """Switch to the survival layout showing ``outcome``: 3D view, curves and SOM side by side,
        the slice views and the results table below.

        Returns the view nodes (curves, SOM, results table). The layout logic (Slicer's, or one set
        up on the scene) makes them when the layout is chosen.
        """
        if not layoutNode.IsLayoutDescription(SURVIVAL_LAYOUT_ID):
            layoutNode.AddLayoutDescription(SURVIVAL_LAYOUT_ID, SURVIVAL_LAYOUT)
        layoutNode.SetViewArrangement(SURVIVAL_LAYOUT_ID)
        views = [self.scene.GetSingletonNode(tag, className) for tag, className in (
            (CURVES_VIEW_TAG, "vtkMRMLPlotViewNode"), (SOM_VIEW_TAG, "vtkMRMLPlotViewNode"),
            (RESULTS_VIEW_TAG, "vtkMRMLTableViewNode"))]
        if None in views:
            raise GliomaSuiteError(
                "The survival layout's views were not made (the scene has no layout logic); open the "
                "survival charts and table from the Plots and Tables modules instead.")
        curves, som, results = views
        for view, chart in ((curves, outcome.chartNode), (som, outcome.somChartNode)):
            view.SetDoPropagatePlotChartSelection(False)
            view.SetPlotChartNodeID(chart.GetID())
        results.SetDoPropagateTableSelection(False)
        results.SetTableNodeID(outcome.resultsTable.GetID())
        return curves, som, results

    # --- nodes -------------------------------------------------------------------------------------

    def survivalNodes(self, segmentationNode) -> Dict[str, object]:
        """The segmentation's survival nodes that exist now, by key ("chart", "curveTable", ...)."""
        nodes = {}
        for index in range(segmentationNode.GetNumberOfNodeReferenceRoles()):
            role = segmentationNode.GetNthNodeReferenceRole(index)
            node = segmentationNode.GetNodeReference(role)
            if role.startswith(ROLE_PREFIX) and node is not None:
                nodes[role[len(ROLE_PREFIX):]] = node
        return nodes

    def _node(self, segmentationNode, key: str, className: str, label: str):
        """The segmentation's node for ``key`` (made on first use), named "<segmentation> <label>"."""
        role = ROLE_PREFIX + key
        node = segmentationNode.GetNodeReference(role)
        if node is None or node.GetScene() is not self.scene:
            node = self.scene.AddNewNodeByClass(
                className, self.scene.GenerateUniqueName(f"{segmentationNode.GetName()} {label}"))
            segmentationNode.SetNodeReferenceID(role, node.GetID())
        return node

    def _show(self, segmentationNode, result: dict) -> SurvivalOutcome:
        def node(key, className, label):
            return self._node(segmentationNode, key, className, label)

        curve, cohort, hood = result["curve"], result["cohort"]["km"], result["som"]["neighbourhood"]
        row, col = result["som"]["node"]
        tables = {
            "curveTable": node("curveTable", "vtkMRMLTableNode", "survival curve"),
            "cohortTable": node("cohortTable", "vtkMRMLTableNode", "survival cohort"),
            "similarTable": node("similarTable", "vtkMRMLTableNode", "survival similar patients"),
            "somTable": node("somTable", "vtkMRMLTableNode", "survival SOM grid"),
            "resultsTable": node("resultsTable", "vtkMRMLTableNode", "survival results"),
        }
        days = np.asarray(curve["times_days"], dtype=np.float64)
        _fillTable(tables["curveTable"], [
            (MONTHS, days / MONTH_DAYS, "months", "Time from diagnosis"),
            (DAYS, days, "days", "Time from diagnosis"),
            (SURVIVAL, curve["survival"], "", "This patient's probability of being alive (Cox model)"),
            (LOWER, curve["lower"], "", "Lower limit of the " + curve["band"]),
            (UPPER, curve["upper"], "", "Upper limit of the " + curve["band"]),
        ])
        _fillStepTable(tables["cohortTable"], cohort,
                       f"Kaplan-Meier estimate of the fitting cohort ({cohort['n']} patients)")
        _fillStepTable(tables["similarTable"], hood["km"],
                       f"Kaplan-Meier estimate of the {hood['n']} cohort patients on SOM node {row + 1},{col + 1} "
                       f"and the nodes within {hood['radius']} of it")
        self._fillSomTable(tables["somTable"], result)
        _fillTextTable(tables["resultsTable"], self._resultRows(result))

        chart = node("chart", "vtkMRMLPlotChartNode", "survival chart")
        dash = slicer.vtkMRMLPlotSeriesNode.LineStyleDash
        series = [
            self._series(segmentationNode, "patient", "This patient (Cox model)", tables["curveTable"], MONTHS,
                         SURVIVAL, PATIENT_COLOUR, width=3.0),
            self._series(segmentationNode, "bandLower", "95% band (approximate), lower", tables["curveTable"],
                         MONTHS, LOWER, PATIENT_COLOUR, lineStyle=dash, width=1.0),
            self._series(segmentationNode, "bandUpper", "95% band (approximate), upper", tables["curveTable"],
                         MONTHS, UPPER, PATIENT_COLOUR, lineStyle=dash, width=1.0),
            self._series(segmentationNode, "cohort", f"Cohort, Kaplan-Meier (n={cohort['n']})",
                         tables["cohortTable"], MONTHS, SURVIVAL, COHORT_COLOUR),
            self._series(segmentationNode, "similar",
                         f"Similar patients, SOM node {row + 1},{col + 1} and neighbours (n={hood['n']})",
                         tables["similarTable"], MONTHS, SURVIVAL, SIMILAR_COLOUR, lineStyle=dash),
        ]
        lastMonth = max(days[-1] / MONTH_DAYS, 24.0)
        _setChart(chart, series, f"Survival estimate: {result['model']['variant']} model, "
                  f"risk group {result['risk_group']}", "Months", "Probability alive",
                  (0.0, lastMonth * 1.02), (0.0, 1.02))

        somChart = node("somChart", "vtkMRMLPlotChartNode", "survival SOM chart")
        grey = [self._series(segmentationNode, f"som{index}", label, tables["somTable"], "Column", label,
                             (shade, shade, shade), plotType=slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter,
                             marker=slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle, markerSize=size)
                for index, (label, _, _, size, shade) in enumerate(SOM_COUNT_BINS)]
        patient = self._series(segmentationNode, "somPatient", f"{SOM_PATIENT} ({row + 1},{col + 1})",
                               tables["somTable"], "Column", SOM_PATIENT, PATIENT_COLOUR,
                               plotType=slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter,
                               marker=slicer.vtkMRMLPlotSeriesNode.MarkerStyleSquare, markerSize=18.0)
        # Drawn first, so the pooled nodes show as blue halos around their grey markers.
        pooled = self._series(segmentationNode, "somPooled", f"{SOM_POOLED} (n={hood['n']})", tables["somTable"],
                              "Column", SOM_POOLED, SIMILAR_COLOUR,
                              plotType=slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter,
                              marker=slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle, markerSize=24.0)
        rows, cols = result["som"]["grid"]
        _setChart(somChart, [pooled] + grey + [patient], "Self-organising map of the cohort", "SOM column",
                  "SOM row", (0.3, cols + 0.7), (0.3, rows + 0.7))
        return SurvivalOutcome(result, chart, somChart, **tables)

    def _series(self, segmentationNode, key, name, table, xColumn, yColumn, colour, width=2.0,
                lineStyle=None, plotType=None, marker=None, markerSize=7.0):
        series = self._node(segmentationNode, "series." + key, "vtkMRMLPlotSeriesNode", "survival " + key)
        wasModifying = series.StartModify()
        series.SetName(name)
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName(xColumn)
        series.SetYColumnName(yColumn)
        series.SetPlotType(plotType if plotType is not None else slicer.vtkMRMLPlotSeriesNode.PlotTypeLine)
        series.SetColor(*colour)
        series.SetLineWidth(width)
        if plotType == slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter:
            series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleNone)
        else:
            series.SetLineStyle(lineStyle if lineStyle is not None else slicer.vtkMRMLPlotSeriesNode.LineStyleSolid)
        series.SetMarkerStyle(marker if marker is not None else slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
        series.SetMarkerSize(markerSize)
        series.EndModify(wasModifying)
        return series

    def _fillSomTable(self, table, result: dict) -> None:
        """One row per SOM node; the display columns hold the node's row where it belongs, else NaN
        (the chart draws no point there)."""
        som = result["som"]
        counts = np.asarray(som["grid_counts"])
        rows, cols = som["grid"]
        model = self._modelOf(result)
        patientRow, patientCol = som["node"]
        radius = som["neighbourhood"]["radius"]
        r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        r, c, n = r.ravel(), c.ravel(), counts.ravel()
        events = np.array([model.som.node(i, j)["events"] for i, j in zip(r, c)], dtype=np.float64)
        medians = np.array([_nodeMedianMonths(model.som.node(i, j)) for i, j in zip(r, c)])
        y = (r + 1).astype(np.float64)

        def where(mask):
            return np.where(mask, y, np.nan)

        pooled = np.maximum(np.abs(r - patientRow), np.abs(c - patientCol)) <= radius
        columns = [
            ("Row", y, "", "SOM row (1 = first)"),
            ("Column", (c + 1).astype(np.float64), "", "SOM column (1 = first)"),
            ("Patients", n.astype(np.float64), "", "Cohort patients whose best-matching node this is"),
            ("Deaths", events, "", "Deaths among them during follow-up"),
            ("Median survival", medians, "months",
             "Kaplan-Meier median of the node's patients (NaN: not reached, or no patients)"),
        ]
        for label, fewest, most, _, _ in SOM_COUNT_BINS:
            columns.append((label, where((n >= fewest) & (n <= most)), "",
                            f"Row of the nodes with {label.lower()} (drawn by the chart)"))
        columns.append((SOM_PATIENT, where((r == patientRow) & (c == patientCol)), "",
                        "Row of the patient's best-matching node (drawn by the chart)"))
        columns.append((SOM_POOLED, where(pooled), "",
                        "Row of the nodes pooled into the similar patients' curve (drawn by the chart)"))
        _fillTable(table, columns)

    def _modelOf(self, result: dict):
        """The model (full or reduced) that produced ``result``."""
        return next(model for model in self.models() if model is not None and model.name == result["model"]["name"])

    def _resultRows(self, result: dict) -> list:
        median = result["median_survival"]
        if median["estimable"]:
            lo, hi = median["ci95_months"]
            interval = (f" (95% CI {lo:.1f} to {hi:.1f})" if lo is not None and hi is not None else
                        f" (95% CI from {lo:.1f}; the upper limit is beyond the cohort's follow-up)" if lo is not None
                        else "")
            medianText = f"{median['months']:.1f} months{interval}"
        else:
            medianText = f"beyond the cohort's follow-up ({median['follow_up_days'] / MONTH_DAYS:.0f} months)"
        som, hood = result["som"], result["som"]["neighbourhood"]
        row, col = som["node"]
        similar = (f"node {row + 1},{col + 1} ({som['n']} cohort patients); with the nodes within {hood['radius']}: "
                   f"{hood['n']} patients, median " +
                   (f"{hood['median_months']:.1f} months" if hood["median_months"] is not None else "not reached"))
        rows = [
            ("Segmentation", result["segmentation"]),
            ("Age", f"{result['inputs']['age']:g} years"),
            ("Median survival", medianText),
        ]
        for months, p in result["p_alive"].items():
            rows.append((f"Alive at {months} months",
                         "not estimable (beyond the cohort's follow-up)" if p is None else
                         f"{100 * p['p']:.0f}% (95% CI {100 * p['lower']:.0f}-{100 * p['upper']:.0f}%)"))
        rows += [
            ("BraTS survival class", result["brats_class"]),
            ("Risk group", f"{result['risk_group']} (hazard {result['hazard_ratio_vs_cohort_average']:.2f} times the "
                           f"cohort's average patient; {result['risk_group_rule']})"),
            ("Similar patients (SOM)", similar),
            ("Model", f"{result['model']['name']}, {result['model']['variant']} model "
                      f"({result['model']['why']}); cross-validated C-index {result['model']['cv_cindex']:.2f}"),
            ("Extent of resection", "not an input of this model (it uses age and the tumour's measurements only)"),
            ("Warnings", " ".join(result["warnings"]) or "none"),
            ("Summary", result["sentence"]),
        ]
        return rows


# --- helpers ---------------------------------------------------------------------------------------

def stepCurve(times, values):
    """A step function (value holds until the next time) as the corners of the line that draws it."""
    times, values = np.asarray(times, dtype=np.float64), np.asarray(values, dtype=np.float64)
    return np.repeat(times, 2)[1:], np.repeat(values, 2)[:-1]


def _nodeMedianMonths(node: dict) -> float:
    km = node.get("km")
    return km["median"] / MONTH_DAYS if km and km.get("median") is not None else math.nan


def _fillStepTable(table, km: dict, description: str) -> None:
    days, survival = stepCurve(km["times"], km["survival"])
    _fillTable(table, [
        (MONTHS, days / MONTH_DAYS, "months", "Time from diagnosis"),
        (DAYS, days, "days", "Time from diagnosis"),
        (SURVIVAL, survival, "", description + "; each drop appears twice, before and after it"),
    ])


def _fillTable(table, columns) -> None:
    """Replace a table node's columns with (name, values, unit, description) numeric columns."""
    wasModifying = table.StartModify()
    table.SetLocked(True)  # computed values: change the inputs, not the numbers
    table.RemoveAllColumns()
    for name, values, unit, description in columns:
        array = numpy_support.numpy_to_vtk(np.ascontiguousarray(values, dtype=np.float64), deep=True)
        array.SetName(name)
        table.AddColumn(array)
        if unit:
            table.SetColumnUnitLabel(name, unit)
        table.SetColumnDescription(name, description)
    table.EndModify(wasModifying)


def _fillTextTable(table, rows) -> None:
    items, values = vtk.vtkStringArray(), vtk.vtkStringArray()
    items.SetName(ITEM)
    values.SetName(VALUE)
    for item, value in rows:
        items.InsertNextValue(item)
        values.InsertNextValue(value)
    wasModifying = table.StartModify()
    table.SetLocked(True)
    table.RemoveAllColumns()
    table.AddColumn(items)
    table.AddColumn(values)
    table.EndModify(wasModifying)


def _setChart(chart, series, title, xTitle, yTitle, xRange, yRange) -> None:
    wasModifying = chart.StartModify()
    chart.RemoveAllPlotSeriesNodeIDs()
    for node in series:
        chart.AddAndObservePlotSeriesNodeID(node.GetID())
    chart.SetTitle(title)
    chart.SetXAxisTitle(xTitle)
    chart.SetYAxisTitle(yTitle)
    chart.SetXAxisRangeAuto(False)
    chart.SetYAxisRangeAuto(False)
    chart.SetXAxisRange(*xRange)
    chart.SetYAxisRange(*yRange)
    chart.SetLegendVisibility(True)
    chart.SetGridVisibility(True)
    chart.EndModify(wasModifying)
