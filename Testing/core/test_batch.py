"""``gliomasuite batch`` end to end on tiny real cohorts: rows, resume, manifests, refusals, a killed worker.

The real studies are two BraTS cases (symlinked from ``$GLIOMASUITE_DATA/brats``), segmented with the
shipped model on a one-worker local Dask cluster: about 3 s each, plus a few seconds to start the
cluster. The refusals need no segmentation; the cohort checks at the end need no data at all.
"""

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from gliomasuite import cli
from gliomasuite.batch.cohort import read_cohort
from gliomasuite.batch.study import input_checksum
from gliomasuite.errors import GliomaSuiteError

CASES = ("BraTS2021_00006", "BraTS2021_01476")
MODALITIES = ("t1", "t1ce", "t2", "flair")


def data_root() -> Path:
    root = os.environ.get("GLIOMASUITE_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("GLIOMASUITE_DATA is not set (the real data in ../shared/data)")
    return Path(root)


def link_case(case: str, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for source in (data_root() / "brats" / case).iterdir():
        (folder / source.name).symlink_to(source)
    return folder


def corrupt_study(folder: Path, seed: int = 0) -> Path:
    """Four files named as a study's, holding random bytes instead of NIfTI images."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for modality in MODALITIES:
        (folder / f"{folder.name}_{modality}.nii.gz").write_bytes(rng.bytes(3000))
    return folder


def batch(*args, capsys):
    """``gliomasuite --json-progress batch ...``: (exit status, the done/error record, all records, seconds)."""
    start = time.perf_counter()
    code = cli.main(["--json-progress", "batch", *map(str, args)])
    seconds = time.perf_counter() - start
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    final = next((r for r in reversed(records) if r["event"] in ("done", "error")), {})
    if code == 2 and not final:
        final = {"event": "error", "message": captured.err}
    return code, final, records, seconds


def table(out: Path) -> dict:
    import csv

    with open(out / "cohort.csv", newline="") as handle:
        return {row["id"]: row for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cohort")
    for case in CASES:
        link_case(case, folder / case)
    corrupt_study(folder / "corrupt")
    return folder


@pytest.fixture(scope="module")
def first_run(cohort, tmp_path_factory):
    """The cohort run once, with one worker: what the tests below look at."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("batch") / "out"
    stdout = io.StringIO()  # a module-scoped fixture cannot take capsys
    with contextlib.redirect_stdout(stdout):
        start = time.perf_counter()
        code = cli.main(["--json-progress", "batch", str(cohort), "-o", str(out), "--workers", "1",
                         "--threads-per-worker", "2"])
        seconds = time.perf_counter() - start
    records = [json.loads(line) for line in stdout.getvalue().splitlines() if line.startswith("{")]
    return {"out": out, "code": code, "records": records, "seconds": seconds}


def test_a_cohort_gives_one_row_per_study_and_an_error_row_for_the_corrupt_one(first_run):
    out = first_run["out"]
    assert first_run["code"] == 0
    done = first_run["records"][-1]
    assert done["event"] == "done"
    assert (done["result"]["ok"], done["result"]["errors"], done["result"]["skipped"]) == (2, 1, 0)
    rows = table(out)
    assert {k: rows[k]["status"] for k in rows} == {CASES[0]: "ok", CASES[1]: "ok", "corrupt": "error"}
    assert "damaged" in rows["corrupt"]["error"] and "corrupt_t1ce.nii.gz" in rows["corrupt"]["error"]
    for case in CASES:
        folder = out / "studies" / case
        assert sorted(p.name for p in folder.iterdir()) == ["result.json", "segmentation.nii.gz"]
        result = json.loads((folder / "result.json").read_text())
        assert result["gliomasuite_version"] and len(result["key"]["sha256"]) == 64
        assert float(rows[case]["WT_cm3"]) == pytest.approx(result["segmentation"]["volumes_cm3"]["WT"])
        assert float(rows[case]["WT_cm3"]) > 0
        assert rows[case]["segmentation_model"] == "vnet-brats-cv4-v1" and rows[case]["worker"] == "0"
        assert rows[case]["output"] == f"studies/{case}" and float(rows[case]["elapsed_s"]) > 0
    assert not (out / "studies" / "corrupt").exists()
    assert [p.name for p in (out / "studies").iterdir() if p.name.startswith(".")] == []  # no staging left
    progress = [r for r in first_run["records"] if r["event"] == "progress"]
    assert progress[-1]["fraction"] == 1.0 and "3/3 studies done" in progress[-1]["message"]

    import pyarrow.parquet as pq

    parquet = pq.read_table(out / "cohort.parquet").to_pydict()
    assert parquet["id"] == sorted(rows) and parquet["status"] == [rows[i]["status"] for i in sorted(rows)]
    assert parquet["WT_cm3"][0] == pytest.approx(float(rows[CASES[0]]["WT_cm3"]))


def test_a_rerun_skips_the_finished_studies_without_model_work(first_run, cohort, capsys):
    out = first_run["out"]
    stamps = {case: (out / "studies" / case / "segmentation.nii.gz").stat().st_mtime_ns for case in CASES}
    code, done, records, seconds = batch(cohort, "-o", out, capsys=capsys)
    assert code == 0 and (done["result"]["skipped"], done["result"]["ok"], done["result"]["errors"]) == (2, 0, 1)
    rows = table(out)
    assert [rows[c]["status"] for c in CASES] == ["skipped", "skipped"]
    assert rows[CASES[0]]["WT_cm3"] and rows[CASES[0]]["elapsed_s"] == ""  # the earlier result, no work now
    assert rows["corrupt"]["status"] == "error" and "damaged" in rows["corrupt"]["error"]  # remembered, not rerun
    assert not any(r["event"] == "progress" for r in records)  # no study was submitted: no cluster started
    assert done["result"]["workers"] == 0
    assert seconds < first_run["seconds"] / 3
    assert stamps == {case: (out / "studies" / case / "segmentation.nii.gz").stat().st_mtime_ns for case in CASES}


def test_a_study_whose_inputs_changed_is_processed_again(first_run, cohort, capsys):
    out = first_run["out"]
    corrupt_study(cohort / "corrupt", seed=1)  # other bytes, same names and sizes
    code, done, records, _ = batch(cohort, "-o", out, capsys=capsys)
    assert code == 0 and (done["result"]["skipped"], done["result"]["errors"]) == (2, 1)
    assert any(r["event"] == "progress" and "1/1 studies done" in r["message"] for r in records)


def test_a_manifest_with_ages_scores_survival_and_makes_a_missing_folder_an_error_row(tmp_path, capsys):
    link_case(CASES[0], tmp_path / "data" / "case")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("study,id,age,scan_date\ndata/case,P1,37,2020-01-02\ndata/elsewhere,P2,50,2020-02-03\n")
    out = tmp_path / "out"
    code, done, _, _ = batch(manifest, "-o", out, capsys=capsys)
    assert code == 0, done
    rows = table(out)
    assert rows["P1"]["status"] == "ok" and rows["P1"]["age"] == "37.0" and rows["P1"]["scan_date"] == "2020-01-02"
    assert float(rows["P1"]["median_survival_days"]) > 0 and rows["P1"]["risk_group"] in ("low", "intermediate", "high")
    folder = out / "studies" / "P1"
    assert sorted(p.name for p in folder.iterdir()) == ["result.json", "segmentation.nii.gz", "survival.json",
                                                          "survival.png"]
    survival = json.loads((folder / "survival.json").read_text())
    assert survival["plot"] == str(folder / "survival.png")  # the final place, not the staging folder
    assert rows["P2"]["status"] == "error" and "missing folder" in rows["P2"]["error"]
    assert str(tmp_path / "data" / "elsewhere") in rows["P2"]["error"]


def test_duplicated_ids_are_refused_before_any_work(tmp_path, capsys):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("study,id\na,P1\n\nb,p1\n")
    code, error, _, _ = batch(manifest, "-o", tmp_path / "out", capsys=capsys)
    assert code == 2 and "same ID" in error["message"] and "lines 2, 4" in error["message"]
    assert not (tmp_path / "out").exists()


def test_an_unreachable_scheduler_is_one_sentence_and_exit_2_quickly(tmp_path, capsys):
    corrupt_study(tmp_path / "cohort" / "s1")
    code, error, _, seconds = batch(tmp_path / "cohort", "-o", tmp_path / "out", "--scheduler", "tcp://127.0.0.1:1",
                                    capsys=capsys)
    assert code == 2 and "No Dask scheduler answered at tcp://127.0.0.1:1" in error["message"]
    assert seconds < 20
    assert not (tmp_path / "out" / "cohort.json").exists()


def test_an_output_folder_of_another_cohort_is_refused_unless_overwrite(first_run, tmp_path, capsys):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("study,id\nnowhere,X1\n")  # no work: its only row is an error row
    code, error, _, _ = batch(manifest, "-o", first_run["out"], capsys=capsys)
    assert code == 2 and "holds the results of another cohort" in error["message"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, error, _, _ = batch(manifest, "-o", other, capsys=capsys)
    assert code == 2 and "not a batch output" in error["message"]
    code, done, _, _ = batch(manifest, "-o", other, "--overwrite", capsys=capsys)
    assert code == 0 and (other / "notes.txt").exists() and table(other)["X1"]["status"] == "error"


def test_a_worker_killed_mid_study_costs_a_retry_not_the_result(cohort, tmp_path):
    """A worker process SIGKILLed while it segments: the nanny starts a new one, the study runs again there,
    and its folder holds the complete, correct result (the same labels as segmenting it here)."""
    import dask
    import logging

    from distributed import Client, LocalCluster

    from gliomasuite.batch.runner import ClusterSettings, run_cohort
    from gliomasuite.batch.study import StudySettings
    from gliomasuite.segmentation.inference import segment_study
    from gliomasuite.study import load_study

    link_case(CASES[0], tmp_path / "cohort" / CASES[0])
    study_cohort = read_cohort(tmp_path / "cohort")
    out = tmp_path / "out"
    seen = {}
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            client.run(lambda: __import__("gliomasuite.segmentation.inference"))  # warm: the kill lands in the study
            (first_pid,) = client.run(os.getpid).values()

            def kill_mid_study():
                deadline = time.monotonic() + 60
                while not any(client.processing().values()) and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(1.0)
                seen["finished_before_kill"] = (out / "studies" / CASES[0] / "result.json").exists()
                os.kill(first_pid, signal.SIGKILL)

            killer = threading.Thread(target=kill_mid_study)
            killer.start()
            summary = run_cohort(study_cohort, out, StudySettings(), ClusterSettings(retries=1), client=client)
            killer.join()
            (second_pid,) = client.run(os.getpid).values()
    assert seen == {"finished_before_kill": False} and second_pid != first_pid
    assert (summary["ok"], summary["errors"]) == (1, 0)
    folder = out / "studies" / CASES[0]
    assert sorted(p.name for p in folder.iterdir()) == ["result.json", "segmentation.nii.gz"]
    assert [p.name for p in (out / "studies").iterdir() if p.name.startswith(".")] == []
    expected = segment_study(load_study(cohort / CASES[0]))
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "segmentation.nii.gz")))
    assert np.array_equal(written, sitk.GetArrayFromImage(expected.labels))
    assert json.loads((folder / "result.json").read_text())["segmentation"]["volumes_cm3"] == \
        {k: round(v, 3) for k, v in expected.volumes_cm3.items()}


# ----------------------------------------------------------------------------------------------
# no data needed


def test_the_checksum_reads_contents_not_time_stamps(tmp_path):
    study = corrupt_study(tmp_path / "s")
    before = input_checksum(study)
    target = study / "s_t1.nii.gz"
    stat = target.stat()
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same time stamp
    after = input_checksum(study)
    assert after != before
    (study / ".DS_Store").write_text("finder")  # hidden files are not inputs
    assert input_checksum(study) == after


def test_a_cohort_folder_leaves_out_the_output_folder_and_refuses_a_single_study(tmp_path):
    corrupt_study(tmp_path / "cohort" / "a")
    (tmp_path / "cohort" / "results").mkdir()
    cohort = read_cohort(tmp_path / "cohort", exclude=[tmp_path / "cohort" / "results"])
    assert [e.id for e in cohort.entries] == ["a"]
    with pytest.raises(GliomaSuiteError, match="looks like one study"):
        read_cohort(tmp_path / "cohort" / "a")
    manifest = tmp_path / "m.csv"
    manifest.write_text("study,age\ncohort/a,abc\n")
    (entry,) = read_cohort(manifest).entries
    assert entry.id == "a" and "not a number" in entry.problem
    with pytest.raises(GliomaSuiteError, match="no 'years' column"):
        read_cohort(manifest, age_column="years")
