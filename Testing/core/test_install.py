"""The package a user installs carries everything: built as sdist, then wheel, installed outside the checkout.

Only the editable set-up can hide a model file left out of the package, so this builds the sdist from
the repository, the wheel from that sdist, installs the wheel into a new virtual environment, and
runs the commands there from a folder outside the checkout. To keep CI fast the new environment
borrows the already installed third-party dependencies (torch, MONAI, SimpleITK, ...) read-only from
the test environment through a ``.pth`` line; GliomaSuite itself comes only from the wheel, and the
test checks that it does. (A fully clean install, dependencies and all, is what the README's set-up
does.)
"""

import csv
import json
import os
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("gliomasuite/models/models.json", "gliomasuite/models/vnet-brats-v2.npz",
           "gliomasuite/models/vnet-brats-reduced-v2.npz", "gliomasuite/models/survival-brats2020-v1.json",
           "gliomasuite/models/survival-brats2020-v1-reduced.json", "gliomasuite/models/vnet-brats-cv4-v1.md",
           "gliomasuite/models/vnet-brats-cv4-f0.npz", "gliomasuite/models/vnet-brats-cv4-f3.npz",
           "gliomasuite/models/recurrence-sim-v2.npz", "gliomasuite/models/recurrence-sim-v2.md")


def _run(*command, cwd, timeout=600, env=None):
    result = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout,
                            env=env)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, gliomasuite command, a work folder outside the checkout) of a wheel-only install."""
    base = tmp_path_factory.mktemp("install")
    sdist_dir, wheel_dir = base / "sdist", base / "wheel"
    _run(sys.executable, "-c", f"from setuptools import build_meta as b; print(b.build_sdist({str(sdist_dir)!r}))",
         cwd=ROOT)
    sdist = next(sdist_dir.glob("gliomasuite-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        for wanted in SHIPPED:
            assert any(n.endswith("GliomaSuite/" + wanted) for n in names), f"{wanted} is not in the sdist"
        tar.extractall(base / "unpacked")
    unpacked = next((base / "unpacked").iterdir())
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheel_dir, unpacked,
         cwd=base)
    wheel = next(wheel_dir.glob("gliomasuite-*.whl"))
    with zipfile.ZipFile(wheel) as whl:
        for wanted in SHIPPED:
            assert wanted in whl.namelist(), f"{wanted} is not in the wheel"

    venv = base / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=base)
    python = venv / "bin" / "python"
    fresh_site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                           cwd=base).stdout.strip())
    (fresh_site / "borrowed-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    # --ignore-installed: the test environment's editable GliomaSuite is visible through the .pth line and
    # must neither satisfy the install nor be uninstalled by it.
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--ignore-installed",
         wheel, cwd=base)
    work = base / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return python, venv / "bin" / "gliomasuite", work, env


def test_the_wheel_installs_and_its_package_comes_from_the_wheel(installed):
    python, gliomasuite, work, env = installed
    where = _run(python, "-c", "import gliomasuite, gliomasuite.registry as r; print(gliomasuite.__file__); "
                 "print(r.MODELS_DIR)", cwd=work, env=env).stdout.split()
    assert all(str(python.parents[1]) in w and str(ROOT) not in w for w in where), where
    from gliomasuite import __version__

    assert _run(gliomasuite, "--version", cwd=work, env=env).stdout.strip() == f"gliomasuite {__version__}"


def test_the_installed_package_segments_the_demo_study_and_scores_survival(installed):
    python, gliomasuite, work, env = installed
    _run(gliomasuite, "demo", "-o", "demo", cwd=work, env=env)
    demo = json.loads((work / "demo" / "demo_result.json").read_text())
    assert demo["dice"]["WT"] > 0.85 and demo["model"] == "vnet-brats-cv4-v1"
    assert demo["gliomasuite_version"]
    # The demo's follow-up ran the recurrence model from the installed package's own files.
    recurrence = json.loads((work / "demo" / "followup" / "followup.json").read_text())["recurrence"]
    assert recurrence["model"] == "recurrence-sim-v2" and 0.0 <= recurrence["probability"] <= 1.0
    assert (work / "demo" / "followup" / recurrence["map"]).is_file()

    done = _run(gliomasuite, "--json-progress", "segment", "demo/study", "-o", "seg.nii.gz", cwd=work, env=env)
    summary = json.loads(done.stdout.strip().splitlines()[-1])["result"]
    assert summary["volumes_cm3"]["WT"] > 10 and summary["gliomasuite_version"]
    stamp = _run(python, "-c", "from gliomasuite.outputs import read_stamp; print(read_stamp('seg.nii.gz'))",
                 cwd=work, env=env).stdout.strip()
    assert stamp.startswith("gliomasuite ") and "vnet-brats-cv4-v1" in stamp

    columns = ["subject_id", "age", "WT_vol_mm3", "TC_vol_mm3", "ET_vol_mm3", "NCR_vol_mm3", "ED_vol_mm3",
               "WT_sphericity", "TC_sphericity"]
    with open(work / "patients.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerow(["P1", 55, 60000, 20000, 12000, 8000, 40000, 0.55, 0.65])
        writer.writerow(["P2", 72, 90000, 40000, 25000, 15000, 50000, 0.45, 0.55])
    _run(gliomasuite, "survival", "--table", "patients.csv", "-o", "scores.csv", cwd=work, env=env)
    rows = list(csv.DictReader(open(work / "scores.csv")))
    assert [r["model"] for r in rows] == ["survival-brats2020-v1"] * 2
    assert float(rows[1]["risk_score"]) > float(rows[0]["risk_score"]) and rows[0]["gliomasuite_version"]

    _run(gliomasuite, "survival", "--seg", "seg.nii.gz", "--age", "60", "-o", "patient", cwd=work, env=env)
    patient = json.loads((work / "patient" / "survival.json").read_text())
    assert patient["gliomasuite_version"] and 0 < patient["p_alive"]["12"]["p"] < 1
