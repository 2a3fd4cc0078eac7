"""Export report from the scene: a real case's volumes, its segmentation as a reader corrected it, the
survival estimate of that segmentation, and a real follow-up, through GliomaSuiteLib's ReportLogic and
the core's ``gliomasuite report`` run as a background process.

What a user relies on: the report measures the segmentation as it is in the scene (edits included),
carries the same survival numbers the Survival tab shows and the follow-up as the reader left it, runs
without freezing Slicer, and a refused or cancelled export leaves nothing behind.
"""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from gliomasuite.errors import GliomaSuiteError
from gliomasuite.labels import volumes_cm3
from GliomaSuiteLib import labels_from_segmentation_node, segmentation_node_from_labels
from GliomaSuiteLib.FollowupLogic import FollowupLogic, readFollowup
from GliomaSuiteLib.Process import CANCELLED, DONE
from GliomaSuiteLib.ReportLogic import ReportLogic
from GliomaSuiteLib.SurvivalLogic import SurvivalLogic
from test_segment_tab import erase_upper_half

CASE = "BraTS2021_01476"
DATA = Path(os.environ.get("GLIOMASUITE_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
CASE_DIR = DATA / "brats" / CASE
UCSF = DATA / "longitudinal" / "ucsf-alptdg-segs" / "100118"
AGE = 60.0
RUN_TIMEOUT_S = 240

pytestmark = pytest.mark.skipif(not (CASE_DIR / f"{CASE}_seg.nii.gz").is_file(),
                                reason=f"needs the BraTS case {CASE} (set GLIOMASUITE_DATA)")


@pytest.fixture
def scene_case(mrml):
    volumes = {m: mrml.logic("Volumes").AddArchetypeVolume(str(CASE_DIR / f"{CASE}_{m}.nii.gz"), f"{CASE}_{m}", 0)
               for m in ("t1", "t1ce", "t2", "flair")}
    segmentation = segmentation_node_from_labels(mrml.scene, sitk.ReadImage(str(CASE_DIR / f"{CASE}_seg.nii.gz")),
                                                 volumes["t1ce"], f"{CASE} tumour")
    return volumes, segmentation


def test_the_report_measures_the_corrected_segmentation_and_carries_survival_and_follow_up(mrml, scene_case, tmp_path):
    volumes, segmentation = scene_case
    erase_upper_half(segmentation, "ED", 2, volumes["t1ce"])  # a reader's correction, as the Segment Editor makes it
    labels = labels_from_segmentation_node(segmentation, volumes["t1ce"])
    expected = volumes_cm3(labels, volumes["t1ce"].GetSpacing())
    survival = SurvivalLogic(mrml.scene).score(segmentation, AGE)
    followup_logic = FollowupLogic(mrml.scene, mrml.app_logic)
    followup_out = tmp_path / "followup"
    from gliomasuite import cli  # the follow-up the tab would have loaded: two real label maps
    assert cli.main(["followup", *(str(UCSF / f"100118_time{i}_seg.nii.gz") for i in (1, 2)), "--labels", "post-treatment",
                     "-o", str(followup_out)]) == 0
    followup_logic.loadFollowup(followup_out, name="100118")
    followup = followup_logic.result()

    logic = ReportLogic(mrml.scene)
    out = tmp_path / "report"
    process = logic.startReport(volumes, segmentation, out, survivalResult=survival, followupResult=followup,
                                followupFolder=followup_out, age=AGE)
    assert logic.isRunning and process.isRunning  # returned at once: the work is in another process
    outcome = logic.waitForCompletion(timeout=RUN_TIMEOUT_S)
    assert outcome.state == DONE, outcome.errorMessage
    report = json.loads((out / "report.json").read_text())
    for region in ("NCR", "ED", "ET", "TC", "WT"):
        assert report["volumes"][region]["cm3"] == pytest.approx(expected[region], abs=0.006), region
    assert report["survival"]["median_months"] == survival["median_survival"]["months"]
    assert report["survival"]["age_years"] == AGE
    assert report["followup"]["response"]["sentence"] == followup["response"]["sentence"]
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF") and outcome.files["pdf"].endswith("report.pdf")
    assert not logic.isRunning and not list(Path(outcome.outputFolder).glob(".*partial*"))


def test_a_refused_export_says_why_and_a_cancelled_one_leaves_nothing(mrml, scene_case, tmp_path):
    volumes, segmentation = scene_case
    logic = ReportLogic(mrml.scene)
    with pytest.raises(GliomaSuiteError, match="T1ce"):
        logic.startReport({"flair": volumes["flair"]}, segmentation, tmp_path / "a")
    with pytest.raises(GliomaSuiteError, match="no segmentation"):
        logic.startReport(volumes, None, tmp_path / "b")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    with pytest.raises(GliomaSuiteError, match="not empty"):
        logic.startReport(volumes, segmentation, busy)
    assert [p.name for p in busy.iterdir()] == ["mine.txt"] and not logic.isRunning

    out = tmp_path / "cancelled"
    logic.startReport(volumes, segmentation, out)
    time.sleep(0.5)
    logic.cancel()
    outcome = logic.waitForCompletion(timeout=60)
    assert outcome.state == CANCELLED
    assert not out.exists() or not any(out.iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
