"""One contract for failure, for every command (issue 16): given a bad input file or folder, or an output
path that cannot be written, a command exits with status 2 and one sentence of under 300 characters
that names the file, with no traceback and nothing new on disk. Plus a property-based fuzz of image
headers and sizes through ``segment``: whatever the header says, exit 0 with a label map on the input's
grid, or exit 2 with one sentence and nothing written.

Run in-process (``cli.main``), so a traceback is a test error, not hidden in a subprocess.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from gliomasuite import cli

MAX_MESSAGE = 300


def tree(folder: Path) -> set:
    return {p.relative_to(folder) for p in folder.rglob("*")}


def run_contract(args, capsys, folder: Path, names: str):
    """Run the command; assert the contract; return the message."""
    before = tree(folder)
    try:
        code = cli.main([str(a) for a in args])
    except BaseException as error:  # noqa: B036  (a traceback the user would see)
        raise AssertionError(f"{args[0]}: {type(error).__name__}: {error}") from error
    out, err = capsys.readouterr()
    message = err.strip()
    assert code == 2, (args, code, out[-500:], err[-500:])
    assert "Traceback" not in err and "Traceback" not in out
    assert len(message.splitlines()) == 1, message
    assert len(message) < MAX_MESSAGE, f"{args[0]}: {len(message)} characters: {message}"
    assert names in message, f"{args[0]}: {names!r} not named in: {message}"
    assert tree(folder) == before, f"{args[0]} left behind: {sorted(map(str, tree(folder) - before))}"
    return message


# --- bad inputs -------------------------------------------------------------------------------------


def _corrupt(folder: Path) -> Path:
    path = folder / "broken_t1ce.nii.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(300))  # gzip magic, then garbage
    return path


def _png_as_nifti(folder: Path) -> Path:
    path = folder / "picture_flair.nii.gz"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    return path


def _latin1_csv(folder: Path) -> Path:
    path = folder / "patients.csv"
    path.write_bytes("patient;âge;survie\nMüller;63;400\n".encode("latin-1"))
    return path


def _nifti_as_table(folder: Path) -> Path:
    path = folder / "features.csv"
    sitk.WriteImage(sitk.Image(8, 8, 8, sitk.sitkInt16), str(folder / "tmp.nii.gz"))
    (folder / "tmp.nii.gz").rename(path)
    return path


def _empty_folder(folder: Path) -> Path:
    path = folder / "no studies here"
    path.mkdir()
    return path


BAD_STUDIES = {
    "missing": lambda f: f / "not there",
    "empty folder": _empty_folder,
    "corrupt file": _corrupt,
    "png named nifti": _png_as_nifti,
}
BAD_TABLES = {
    "missing": lambda f: f / "no table.csv",
    "latin-1, wrong columns": _latin1_csv,
    "nifti named csv": _nifti_as_table,
    "empty": lambda f: (f / "empty.csv").write_text("") or f / "empty.csv",
}


def _study_commands(bad: Path, out: Path):
    yield ["segment", bad, "-o", out / "seg.nii.gz"]
    yield ["survival", "--study", bad, "--age", "60", "-o", out / "survival"]
    yield ["report", bad, "-o", out / "report"]
    yield ["followup", bad, bad, "-o", out / "followup", "--dates", "2024-01-01", "2024-04-01"]
    yield ["batch", bad, "-o", out / "cohort"]
    yield ["train-segmentation", "--data", bad, "--out", out / "run"]
    yield ["train-recurrence", "--data", bad, "--out", out / "run", "--validation", "X"]


@pytest.mark.parametrize("kind", sorted(BAD_STUDIES))
def test_every_command_refuses_a_bad_study_in_one_sentence(kind, tmp_path, capsys):
    bad = BAD_STUDIES[kind](tmp_path)
    out = tmp_path / "out"
    for args in _study_commands(bad, out):
        if kind in ("corrupt file", "png named nifti") and args[0] in ("batch", "train-segmentation", "train-recurrence"):
            continue  # these take folders of studies; a file is refused as "not a folder" below
        run_contract(args, capsys, tmp_path, bad.name)


def test_folder_commands_refuse_a_file_where_a_folder_belongs(tmp_path, capsys):
    bad = _corrupt(tmp_path)
    for args in (["batch", bad, "-o", tmp_path / "cohort"], ["train-segmentation", "--data", bad, "--out", tmp_path / "run"],
                 ["train-recurrence", "--data", bad, "--out", tmp_path / "run", "--validation", "X"]):
        run_contract(args, capsys, tmp_path, bad.name)


@pytest.mark.parametrize("kind", sorted(BAD_TABLES))
def test_table_commands_refuse_a_bad_table_in_one_sentence(kind, tmp_path, capsys):
    bad = BAD_TABLES[kind](tmp_path)
    for args in (["survival", "--table", bad, "-o", tmp_path / "scores.csv"],
                 ["fit-survival", "--table", bad, "--out", tmp_path / "fitted"]):
        run_contract(args, capsys, tmp_path, bad.name)


@pytest.mark.parametrize("kind", ["missing", "corrupt file", "png named nifti"])
def test_survival_refuses_a_bad_label_map_in_one_sentence(kind, tmp_path, capsys):
    bad = BAD_STUDIES[kind](tmp_path)
    run_contract(["survival", "--seg", bad, "--age", "60", "-o", tmp_path / "survival"], capsys, tmp_path, bad.name)


# --- outputs that cannot be written: refused before any work -------------------------------------------


@pytest.fixture(scope="module")
def demo_study(tmp_path_factory):
    from gliomasuite.demo import make_demo_study

    return make_demo_study(tmp_path_factory.mktemp("demo") / "study", seed=0)


def _output_commands(study: Path, out: Path):
    yield ["segment", study, "-o", out / "seg.nii.gz"]
    yield ["survival", "--study", study, "--age", "60", "-o", out / "survival"]
    yield ["report", study, "-o", out / "report"]
    yield ["followup", study, study, "-o", out / "followup", "--dates", "2024-01-01", "2024-04-01"]
    yield ["batch", study.parent, "-o", out / "cohort"]


@pytest.mark.parametrize("place", ["under a file", "unwritable"])
def test_every_command_refuses_an_output_it_cannot_write_before_any_work(place, demo_study, tmp_path, capsys):
    if place == "under a file":
        blocker = tmp_path / "a file"
        blocker.write_text("not a folder")
        out, names = blocker, "a file"
    else:
        if os.geteuid() == 0:
            out, names = Path("/proc/gliomasuite-cannot-write-here"), "/proc"
        else:
            locked = tmp_path / "locked"
            locked.mkdir(mode=0o500)
            out, names = locked, "locked"
    for args in _output_commands(demo_study, out):
        run_contract(args, capsys, tmp_path, names)


# --- fuzzed headers -----------------------------------------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(1, 40)),
       spacing=st.tuples(*[st.sampled_from([1e-6, 0.3, 1.0, 2.5, 7.0, 1e5]) for _ in range(3)]),
       pixel=st.sampled_from([sitk.sitkUInt8, sitk.sitkInt16, sitk.sitkFloat32, sitk.sitkFloat64]),
       fill=st.sampled_from(["zeros", "noise", "nan", "inf", "constant"]),
       t1ce_differs=st.booleans())
def test_fuzzed_headers_give_a_label_map_or_one_sentence(size, spacing, pixel, fill, t1ce_differs, tmp_path_factory,
                                                         capsys):
    folder = tmp_path_factory.mktemp("fuzz")
    study = folder / "study"
    study.mkdir()
    rng = np.random.default_rng(0)
    for m in ("t1", "t1ce", "t2", "flair"):
        shape = size[::-1] if not (t1ce_differs and m == "t1ce") else tuple(max(1, s // 2) for s in size[::-1])
        values = {"zeros": np.zeros(shape), "noise": rng.normal(100, 20, shape), "constant": np.full(shape, 7.0),
                  "nan": np.where(rng.random(shape) < 0.3, np.nan, 50.0), "inf": np.where(rng.random(shape) < 0.3, np.inf, 50.0)}[fill]
        image = sitk.Cast(sitk.GetImageFromArray(values.astype(np.float64)), pixel) if pixel in (sitk.sitkFloat32, sitk.sitkFloat64) \
            else sitk.Cast(sitk.GetImageFromArray(np.nan_to_num(values, posinf=0).astype(np.float64)), pixel)
        image.SetSpacing(spacing)
        sitk.WriteImage(image, str(study / f"case_{m}.nii.gz"))
    out = folder / "seg.nii.gz"
    before = tree(folder)
    code = cli.main(["segment", str(study), "-o", str(out), "--device", "cpu"])
    stdout, err = capsys.readouterr()
    assert "Traceback" not in err
    if code == 0:
        written = sitk.ReadImage(str(out))
        assert written.GetSize() == sitk.ReadImage(str(study / "case_t1ce.nii.gz")).GetSize()
    else:
        assert code == 2 and len(err.strip().splitlines()) == 1 and len(err.strip()) < MAX_MESSAGE, err
        assert tree(folder) == before
