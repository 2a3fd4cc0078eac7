"""Writing one report: ``report.json`` first, then ``report.csv``, the figures and ``report.pdf`` from the JSON.

:func:`write_report` is the one function the command line (and later the Slicer module) calls. Everything
is written into a temporary folder beside the output folder and renamed into place at the end, so a
failure, a cancel or an unwritable folder leaves nothing half-written. An existing report folder is
replaced only when asked (``overwrite``), and a non-empty folder that holds no report never is.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional

from ..errors import GliomaSuiteError
from ..outputs import check_output_folder, make_parents, remove_made, write_json_atomically
from .content import build_report, load_inputs, number_rows

Progress = Callable[[float, str], None]


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an output that is a file, or a non-empty folder unless ``overwrite`` and it holds a report."""
    if out.exists() and not out.is_dir():
        raise GliomaSuiteError(f"{out} is a file; give a folder for the report (it will hold report.pdf, "
                               "report.json and report.csv).")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise GliomaSuiteError(f"{out} already exists and is not empty; choose a new folder or pass --overwrite "
                                   "to replace the report in it.")
        if not (out / "report.json").is_file():
            raise GliomaSuiteError(f"{out} is not empty and holds no report.json, so it is not replaced even with "
                                   "--overwrite; choose a new or empty folder for the report.")


def write_report(study, out_dir, *, seg=None, survival=None, followup=None, age: Optional[float] = None,
                 deidentify: bool = False, overwrite: bool = False, progress: Optional[Progress] = None,
                 note: Callable[[str], None] = lambda m: None) -> dict:
    """Build the report of ``study`` from the results given and write it to ``out_dir``.

    ``seg`` is the study's BraTS label map (default: the study folder's own); ``survival`` and
    ``followup`` are the folders (or JSON files) ``gliomasuite survival`` and ``gliomasuite followup``
    wrote; each may be None, which gives a shorter report. A study read from DICOM also gets
    ``report-seg.dcm`` (DICOM SEG) and ``report-sr.dcm`` (TID 1500 SR) referencing its T1ce series
    (:mod:`.dicom`). Returns where everything went and the page count.
    """
    from .dicom import write_report_dicom
    from .figures import draw_key_slices, draw_projection
    from .pdf import render_pdf

    step = progress or (lambda f, m: None)
    out = Path(out_dir)
    check_output(out, overwrite)
    made = make_parents(_writable_parent(out))
    staging = _staging(out)
    try:
        step(0.0, "Reading the study, the label map and the results")
        inputs = load_inputs(study, seg=seg, survival=survival, followup=followup, age=age, note=note)
        step(0.35, "Measuring and gathering the report")
        report = build_report(inputs, deidentify=deidentify)
        step(0.55, "Drawing the figures")
        figures = report["figures"]
        (staging / "figures").mkdir()
        draw_key_slices(inputs.image, inputs.labels, inputs.brain, report["key_slices"], staging / figures["key_slices"])
        draw_projection(inputs.labels, inputs.brain, staging / figures["projection"])
        for key, source in (("survival", inputs.survival_figure), ("followup", inputs.followup_figure)):
            if figures[key]:
                shutil.copyfile(source, staging / figures[key])
        step(0.8, "Writing report.json, report.csv and report.pdf")
        write_json_atomically(report, staging / "report.json")
        written = json.loads((staging / "report.json").read_text())  # the PDF shows what the JSON holds
        with open(staging / "report.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(("section", "item", "value", "unit"))
            writer.writerows(number_rows(written))
        pages = render_pdf(written, staging, staging / "report.pdf")
        dicom = write_report_dicom(inputs, staging, deidentify=deidentify, note=note)  # {} unless DICOM input
        if out.exists():
            shutil.rmtree(out)  # check_output made sure it is empty or a report we may replace
        staging.rename(out)
    except OSError as exc:
        raise GliomaSuiteError(f"The report could not be written to {out} ({exc.strerror or exc}); nothing was "
                               "written: choose a folder you can write to.") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if not out.exists():
            remove_made(made)
    step(1.0, "Report written")
    return {"output": str(out), "pdf": str(out / "report.pdf"), "json": str(out / "report.json"),
            "csv": str(out / "report.csv"), "pages": pages, "deidentified": deidentify,
            **{f"dicom_{kind}": str(out / Path(path).name) for kind, path in dicom.items()}}


def _writable_parent(out: Path) -> Path:
    try:
        check_output_folder(out)
    except GliomaSuiteError as exc:
        raise GliomaSuiteError(f"The report cannot be written: {exc}") from None
    return out


def _staging(out: Path) -> Path:
    try:
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise GliomaSuiteError(f"The report cannot be written to {out} ({exc.strerror or exc}); nothing was "
                               "written: choose a folder you can write to.") from None
