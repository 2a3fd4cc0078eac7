"""The report's content: ``report.json`` built from what the other commands wrote.

:func:`load_inputs` reads and checks the inputs (the study's images, its BraTS label map, and the
``survival.json`` and ``followup.json`` that ``gliomasuite survival`` and ``gliomasuite followup``
wrote); :func:`build_report` turns them into one JSON-ready dict holding every number the PDF shows,
already rounded as the PDF prints it; :func:`number_rows` lists those numbers for ``report.csv``.
Nothing here runs a model. The fields are described in ``docs/report-schema.md``.

With ``deidentify`` the patient's name, ID and birth date, the study's ID and dates, time point
names, file paths and any of these inside the inputs' sentences are removed, and the patient is
named by a pseudonym: the first 8 hex digits of the SHA-256 of the patient ID (else name, else study
ID). The pseudonym is stable, so two reports of one patient can be linked, and is therefore not
anonymous against someone who already knows the ID.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

import numpy as np
import SimpleITK as sitk

from .. import __version__
from ..errors import GliomaSuiteError
from ..followup.timepoints import PATIENT_ID_TAG, PATIENT_NAME_TAG, STUDY_DATE_TAG
from ..labels import ED, ET, NCR, REGIONS as REGION_LABELS
from ..modalities import MODALITIES, display_name

SCHEMA_VERSION = 1
TITLE = "GliomaSuite tumour report"
INTENDED_USE = "Research software, not for clinical use or diagnosis."
DEIDENTIFIED = "de-identified"
DATE_REMOVED = "[date removed]"
REGIONS = ("NCR", "ED", "ET", "TC", "WT")
REGION_NAMES = {"NCR": "necrotic core", "ED": "edema", "ET": "enhancing tumour", "TC": "tumour core",
                "WT": "whole tumour"}
REGION_VALUES = {"NCR": (NCR,), "ED": (ED,), "ET": (ET,), "TC": REGION_LABELS["TC"], "WT": REGION_LABELS["WT"]}
#: How the numbers are rounded in report.json, and so printed in the PDF (1 mm³ = 0.001 cm³).
VOLUME_DECIMALS, PERCENT_DECIMALS, MM_DECIMALS = 2, 1, 1
#: Image shown under the outlines, best first: enhancement is read on T1ce, edema on FLAIR.
FIGURE_MODALITIES = ("t1ce", "flair", "t1", "t2")
#: Lesions listed one by one (all are counted).
MAX_LESIONS_LISTED = 8
LOBE_NOT_DETERMINED = "not determined"
LOBE_WHY = "the lobe needs a registration to a brain atlas, which this version does not do"
RECURRENCE_NOT_AVAILABLE = "the recurrence model did not run for this follow-up"
#: A survival result whose whole tumour differs more than this (relative) was scored on another label map.
SURVIVAL_VOLUME_TOLERANCE = 0.005
P_ALIVE_SHOWN = ("12", "24")
#: Study folder names that name nobody: not scrubbed from sentences by --deidentify (where they are words).
GENERIC_FOLDER_NAMES = {"study", "studies", "dicom", "images", "image", "input", "inputs", "data", "case", "scan",
                        "scans", "mri", "series", "baseline"}
PATIENT_BIRTH_DATE_TAG, STUDY_ID_TAG, ACCESSION_TAG = "0010|0030", "0020|0010", "0008|0050"
DICOM_TAGS = {"patient_name": PATIENT_NAME_TAG, "patient_id": PATIENT_ID_TAG, "birth_date": PATIENT_BIRTH_DATE_TAG,
              "study_date": STUDY_DATE_TAG, "study_id": STUDY_ID_TAG, "accession": ACCESSION_TAG}
CATEGORY_NAMES = {"CR": "Complete response", "PR": "Partial response", "SD": "Stable disease",
                  "PD": "Progressive disease"}


@dataclass
class ReportInputs:
    """Everything a report is made from, checked. Images are reoriented to LPS (axes permuted and
    flipped, never interpolated), so arrays are (z, y, x) = (inferior→superior, anterior→posterior,
    right→left) and the figures can be drawn in radiological convention."""

    study: object                         # gliomasuite.study.Study
    study_label: str                      # the study folder's name
    study_path: Path
    labels: sitk.Image                    # BraTS labels (uint8) on the study's grid, LPS
    segmentation: Path
    stamp: str                            # gliomasuite.outputs.read_stamp of the label map ('' if none)
    image: Optional[sitk.Image]           # the image shown under the outlines, LPS
    shown_modality: Optional[str]
    brain: np.ndarray                     # bool (z, y, x): where any sequence has signal
    dicom: Dict[str, str] = field(default_factory=dict)
    age: Optional[float] = None
    survival: Optional[dict] = None
    survival_path: Optional[Path] = None
    survival_figure: Optional[Path] = None
    followup: Optional[dict] = None
    followup_path: Optional[Path] = None
    followup_figure: Optional[Path] = None
    notes: List[str] = field(default_factory=list)  # the study loader's notes


# ----------------------------------------------------------------------------------------------
# reading the inputs


def load_inputs(study_source, seg=None, survival=None, followup=None, age=None,
                note: Callable[[str], None] = lambda m: None) -> ReportInputs:
    """Read and check the study, its label map (``seg``, else the study folder's own) and the
    optional survival and follow-up results; a :class:`GliomaSuiteError` names what is wrong."""
    from ..outputs import read_stamp
    from ..study import find_segmentation, grid_differences, load_study
    from ..survival.cox import check_value
    from ..survival.features import check_labels, read_label_map

    folder = _study_folder(study_source)
    if seg is None:
        found = find_segmentation(folder) if folder.is_dir() else None
        if found is None:
            raise GliomaSuiteError(
                f"The study {folder} has no segmentation to report on: segment it first (gliomasuite segment STUDY "
                "-o SEG.nii.gz) and pass --seg SEG.nii.gz, or pass your own label map with --seg.")
        note(f"Reporting on {found.name}, the study folder's own label map.")
        seg = found
    seg = Path(seg)
    notes: List[str] = []
    # (series of other frames of reference are shown as given, with the loader's note: the label map is the T1ce's)
    study = load_study(study_source, required=(), log=notes.append, other_frames_ok=True)
    labels = read_label_map(seg)
    if labels.GetDimension() != 3 or labels.GetNumberOfComponentsPerPixel() != 1:
        raise GliomaSuiteError(f"{seg} is not a single 3D label map; give the BraTS label map of this study.")
    diffs = grid_differences(labels, study.reference)
    if diffs:
        raise GliomaSuiteError(
            f"The label map {seg} is not on the grid of the study's {display_name(study.reference_modality)} image "
            f"({', '.join(diffs)} differ), so it is not a segmentation of this study; give the label map made "
            "from this study.")
    array = sitk.GetArrayFromImage(labels)
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.mod(array, 1) == 0):
        raise GliomaSuiteError(f"{seg} has non-integer values: give a label map, not a probability map.")
    check_labels(array, str(seg))
    exact = sitk.GetImageFromArray(array.astype(np.uint8))
    exact.CopyInformation(study.reference)
    shown = next((m for m in FIGURE_MODALITIES if m in study.images), None)
    brain = np.zeros(array.shape, bool)
    for image in study.images.values():
        brain |= sitk.GetArrayFromImage(_lps(image)) > 0
    inputs = ReportInputs(
        study=study, study_label=folder.name, study_path=folder, labels=_lps(exact), segmentation=seg,
        stamp=read_stamp(seg), image=_lps(study.images[shown]) if shown else None, shown_modality=shown,
        brain=brain, dicom=dicom_header(study),
        age=None if age is None else check_value("age", age),
        notes=[n for n in notes if not n.startswith(f"{seg.name} was ignored")])
    if survival is not None:
        inputs.survival_path, inputs.survival, inputs.survival_figure = _read_result(
            survival, "survival.json", "survival.png", "survival --seg LABELMAP --age A -o DIR",
            ("model", "median_survival", "p_alive", "risk_group"))
    if followup is not None:
        inputs.followup_path, inputs.followup, inputs.followup_figure = _read_result(
            followup, "followup.json", "followup.png", "followup TP1 TP2 -o DIR", ("timepoints", "response"))
    return inputs


def _study_folder(source) -> Path:
    """The folder that names the study: the folder given, else the folder of its first file."""
    if isinstance(source, Mapping):
        source = list(source.values())
    if isinstance(source, (list, tuple)):
        if not source:
            raise GliomaSuiteError("No study given: pass the study folder (or its image files).")
        first = Path(source[0]).expanduser()
        return first if first.is_dir() and len(source) == 1 else first.parent
    return Path(source).expanduser()


def _lps(image: sitk.Image) -> sitk.Image:
    return sitk.DICOMOrient(image, "LPS")


def _read_result(path, name: str, figure: str, command: str, keys) -> tuple:
    """(file, content, figure beside it or None) of a result another command wrote."""
    path = Path(path)
    file = path / name if path.is_dir() else path
    if not file.is_file():
        raise GliomaSuiteError(f"There is no {name} at {path}: run `gliomasuite {command}` first and give the "
                               f"folder it wrote (or its {name}).")
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise GliomaSuiteError(f"{file} could not be read as JSON ({exc}); give the {name} that gliomasuite "
                               "wrote.") from None
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise GliomaSuiteError(f"{file} is not a {name} written by `gliomasuite {command.split()[0]}` (it has no "
                               f"{', '.join(missing)}); give the folder that command wrote.")
    picture = file.parent / figure
    return file, data, picture if picture.is_file() else None


def dicom_header(study) -> Dict[str, str]:
    """Patient and study tags (:data:`DICOM_TAGS`) of the first DICOM file of the study ({} if not DICOM).

    The reference series is tried first; only headers are read.
    """
    order = [study.reference_modality] + [m for m in study.modalities if m != study.reference_modality]
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    for modality in order:
        path = Path(study.paths[modality])
        if not path.is_dir():
            continue  # an image file (NIfTI, NRRD, ...): no DICOM header
        for file in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
            reader.SetFileName(str(file))
            try:
                reader.ReadImageInformation()
            except RuntimeError:
                continue
            header = {}
            for key, tag in DICOM_TAGS.items():
                value = reader.GetMetaData(tag).strip(" \0") if reader.HasMetaDataKey(tag) else ""
                if value:
                    header[key] = value
            return header
    return {}


# ----------------------------------------------------------------------------------------------
# building the report


def build_report(inputs: ReportInputs, deidentify: bool = False) -> dict:
    """The content of ``report.json`` (see ``docs/report-schema.md``)."""
    quality: List[dict] = []

    def flag(source: str, text: str, level: str = "note") -> None:
        if text and not any(q["text"] == text for q in quality):
            quality.append({"source": source, "level": level, "text": text})

    for text in inputs.notes:
        flag("study", text)
    missing = [display_name(m) for m in MODALITIES if m not in inputs.study.images]
    if missing:
        flag("study", f"No {', '.join(missing)} in the study: the segmentation could not use "
                      f"{'it' if len(missing) == 1 else 'them'}.", "warning")
    brain_check = _brain_check(inputs.study)
    if brain_check["problems"]:
        flag("study", "Brain check failed: " + "; ".join(brain_check["problems"]) + ".", "warning")

    labels = sitk.GetArrayViewFromImage(inputs.labels)
    spacing = inputs.labels.GetSpacing()
    voxel_mm3 = float(np.prod(spacing))
    volumes = {}
    for region in REGIONS:
        voxels = int(np.count_nonzero(np.isin(labels, REGION_VALUES[region])))
        volumes[region] = {"cm3": round(voxels * voxel_mm3 / 1000.0, VOLUME_DECIMALS), "voxels": voxels}
    if volumes["WT"]["voxels"] == 0:
        flag("segmentation", "The label map contains no tumour: there is nothing to measure.", "warning")
    components, lesions = _lesions(inputs, labels, voxel_mm3)

    survival = None
    if inputs.survival is not None:
        survival = _survival_section(inputs, volumes, flag)
    followup = _followup_section(inputs.followup, flag) if inputs.followup is not None else None
    age = inputs.age
    if age is None and survival is not None:
        age = survival["age_years"]

    report = {
        "schema_version": SCHEMA_VERSION,
        "title": TITLE,
        "intended_use": INTENDED_USE,
        "patient": {"deidentified": False, "pseudonym": None, "age_years": age,
                    "name": _person_name(inputs.dicom.get("patient_name")),
                    "id": inputs.dicom.get("patient_id"), "birth_date": _iso_date(inputs.dicom.get("birth_date"))},
        "study": {"id": inputs.dicom.get("study_id") or inputs.dicom.get("accession") or inputs.study_label,
                  "date": _iso_date(inputs.dicom.get("study_date")),
                  "format": "DICOM" if inputs.dicom else _file_format(inputs.study.paths[inputs.study.reference_modality]),
                  "sequences": [display_name(m) for m in inputs.study.modalities],
                  "missing_sequences": missing,
                  "shown": display_name(inputs.shown_modality) if inputs.shown_modality else None},
        "segmentation": {"labels": "BraTS: 1 NCR necrotic core, 2 ED edema, 4 ET enhancing tumour",
                         "voxel_mm": [round(float(s), 3) for s in spacing],
                         "voxel_volume_mm3": round(voxel_mm3, 4),
                         "made_by": inputs.stamp or None},
        "volumes": volumes,
        "lesions": lesions,
        "key_slices": key_slices(components, inputs.labels, inputs.brain),
        "survival": survival,
        "followup": followup,
        "quality": {"brain_check": brain_check, "flags": quality},
        "models": _models(inputs),
        "inputs": {"study": str(inputs.study_path), "segmentation": str(inputs.segmentation),
                   "survival": str(inputs.survival_path) if inputs.survival_path else None,
                   "followup": str(inputs.followup_path) if inputs.followup_path else None},
        "figures": {"key_slices": "figures/key_slices.png", "projection": "figures/projection.png",
                    "survival": "figures/survival.png" if inputs.survival_figure else None,
                    "followup": "figures/followup.png" if inputs.followup_figure else None},
    }
    if report["figures"]["followup"] is None and followup is not None:
        flag("follow-up", "followup.png was not found beside followup.json, so the follow-up figure is left out.")
    if deidentify:
        report = deidentified(report, inputs)
    return report


def _brain_check(study) -> dict:
    """The segmentation's brain check (:mod:`gliomasuite.brain_check`) on the study's images: no model."""
    from ..brain_check import input_problems
    from ..preprocess import prepare

    if "t1ce" not in study.images:
        return {"run": False, "passed": None, "problems": [], "why": "the study has no T1ce"}
    # Absent sequences are zeros, as the segmentation sees them (segmentation.inference.with_absent_as_zeros,
    # not imported here: it would load PyTorch).
    images = {m: study.images[m] if m in study.images else sitk.Image(study.images["t1ce"]) * 0 for m in MODALITIES}
    problems = input_problems(prepare(images), study.modalities)
    return {"run": True, "passed": not problems, "problems": problems, "why": None}


def _lesions(inputs: ReportInputs, labels: np.ndarray, voxel_mm3: float):
    """Connected components of the whole tumour (the follow-up's rule) with their size and side."""
    from ..followup.lesions import MIN_LESION_MM3, find_lesions
    from ..survival.features import hemisphere

    wt = np.isin(labels, REGION_VALUES["WT"])
    components, count = find_lesions(wt, inputs.labels.GetSpacing()[::-1])
    items = []
    for number in range(1, min(count, MAX_LESIONS_LISTED) + 1):
        mask = components == number
        side = hemisphere(inputs.labels, np.where(mask, labels, 0), inputs.brain)["hemisphere"]
        items.append({"number": number,
                      "volume_cm3": round(int(mask.sum()) * voxel_mm3 / 1000.0, VOLUME_DECIMALS),
                      "enhancing_cm3": round(int((mask & (labels == ET)).sum()) * voxel_mm3 / 1000.0, VOLUME_DECIMALS),
                      "hemisphere": side, "lobe": LOBE_NOT_DETERMINED})
    overall = hemisphere(inputs.labels, labels, inputs.brain) if wt.any() else None
    return components, {
        "count": count,
        "rule": f"connected parts of the whole tumour (touching by a corner counts) of at least {MIN_LESION_MM3:g} mm³",
        "hemisphere": overall["hemisphere"] if overall else None,
        "left_percent": round(100 * overall["left_fraction"], PERCENT_DECIMALS) if overall else None,
        "lobe": LOBE_NOT_DETERMINED, "lobe_why": LOBE_WHY,
        "listed": items, "not_listed": max(0, count - MAX_LESIONS_LISTED)}


def key_slices(components: np.ndarray, labels: sitk.Image, brain: np.ndarray) -> dict:
    """In each direction, the slice holding the most of the largest lesion (the brain's middle without one).

    ``components`` numbers the lesions largest first, on ``labels``' LPS grid. Positions are in
    millimetres from the scanner's origin along the axis, with its direction's letter (S/I for axial, A/P
    for coronal, R/L for sagittal slices, as Slicer's RAS coordinates read).
    """
    target = components == 1
    rule = "through the largest lesion: in each direction the slice holding most of its voxels"
    if not target.any():
        target, rule = brain, "through the brain (there is no tumour): in each direction the slice holding most of it"
    if not target.any():
        target = np.ones(components.shape, bool)
    index = {"axial": int(np.argmax(target.sum(axis=(1, 2)))), "coronal": int(np.argmax(target.sum(axis=(0, 2)))),
             "sagittal": int(np.argmax(target.sum(axis=(0, 1))))}
    point = labels.TransformIndexToPhysicalPoint((index["sagittal"], index["coronal"], index["axial"]))
    # LPS (x, y, z) to the letter and distance a reader sees: S 12.0, I 3.5, A 20.0, P 7.0, R 30.0, L 4.0 mm.
    signed = {"axial": (point[2], "S", "I"), "coronal": (-point[1], "A", "P"), "sagittal": (-point[0], "R", "L")}
    return {"rule": rule,
            **{view: {"index": index[view], "axis": ahead if value >= 0 else behind,
                      "position_mm": round(abs(value), MM_DECIMALS)}
               for view, (value, ahead, behind) in signed.items()}}


def _survival_section(inputs: ReportInputs, volumes: dict, flag) -> dict:
    s = inputs.survival
    median = s["median_survival"]
    som = s.get("som") or {}
    hood = som.get("neighbourhood") or {}
    model = s["model"]
    given = s.get("inputs") or {}
    for warning in s.get("warnings") or []:
        flag("survival", warning, "warning")
    wt_mm3 = given.get("WT_vol_mm3")
    ours = volumes["WT"]["voxels"] * float(np.prod(inputs.labels.GetSpacing()))
    if wt_mm3 is not None and abs(float(wt_mm3) - ours) > SURVIVAL_VOLUME_TOLERANCE * max(ours, 1.0):
        flag("survival", f"The survival estimate was made from a whole tumour of {float(wt_mm3) / 1000:.2f} cm³, not "
                         f"this report's {ours / 1000:.2f} cm³: it belongs to another segmentation (run `gliomasuite "
                         "survival` again on this one).", "warning")
    if inputs.age is not None and given.get("age") is not None and abs(inputs.age - float(given["age"])) > 0.5:
        flag("survival", f"The survival estimate was made for age {float(given['age']):g}, not the {inputs.age:g} "
                         "given here (run `gliomasuite survival` again with the right age).", "warning")
    node = som.get("node")
    return {
        "model": model.get("name"), "variant": model.get("variant"), "why": model.get("why"),
        "cv_cindex": _round(model.get("cv_cindex"), 2),
        "age_years": _round(given.get("age"), 1),
        "median_months": _round(median.get("months"), 1),
        "median_ci95_months": [_round(v, 1) for v in median.get("ci95_months") or [None, None]],
        "median_estimable": bool(median.get("estimable")),
        "p_alive": {months: _percentages(s["p_alive"].get(months)) for months in P_ALIVE_SHOWN},
        "risk_group": s.get("risk_group"),
        "hazard_ratio": _round(s.get("hazard_ratio_vs_cohort_average"), 2),
        "brats_class": s.get("brats_class"),
        "som_node": [node[0] + 1, node[1] + 1] if node else None,
        "similar_patients": hood.get("n"),
        "similar_median_months": _round(hood.get("median_months"), 1),
        "sentence": s.get("sentence"),
    }


def _percentages(p: Optional[dict]) -> Optional[dict]:
    if not p:
        return None
    return {"percent": round(100 * p["p"]), "lower_percent": round(100 * p["lower"]),
            "upper_percent": round(100 * p["upper"])}


def _followup_section(f: dict, flag) -> dict:
    tps = f["timepoints"]
    for text in f.get("notes") or []:
        flag("follow-up", text)
    out = []
    for tp in tps:
        registration = tp.get("registration") or {}
        if registration.get("warning"):
            flag("follow-up", f"{tp['label']}: {registration['warning']}", "warning")
        change = tp.get("volume_change") or {}
        out.append({
            "label": tp["label"], "date": tp.get("date"), "days_from_baseline": tp.get("days_from_baseline"),
            "is_baseline": bool(tp.get("is_baseline")), "is_pre_baseline": bool(tp.get("is_pre_baseline")),
            "segmented_by": tp.get("segmented_by"),
            "volumes_cm3": {r: _round(tp["volumes_cm3"].get(r), VOLUME_DECIMALS) for r in REGIONS},
            "change_from_baseline_percent": {r: _round((change.get(r) or {}).get("from_baseline_percent"),
                                                       PERCENT_DECIMALS) for r in REGIONS},
            "change_from_nadir_percent": {r: _round((change.get(r) or {}).get("from_nadir_percent"), PERCENT_DECIMALS)
                                          for r in REGIONS},
            "nadir": {r: _label_at(tps, (change.get(r) or {}).get("nadir")) for r in REGIONS},
            "sum_of_products_mm2": _round(tp.get("sum_of_products_mm2"), MM_DECIMALS),
            "lesions": [_rano_lesion(les) for les in tp.get("lesions") or [] if les.get("diameters")],
        })
    response = f.get("response")
    if response:
        for method in ("bidimensional", "volumetric"):
            for text in (response.get(method) or {}).get("notes") or []:
                flag("follow-up", text)
    recurrence = f.get("recurrence") or {}
    available = bool(recurrence.get("available"))
    return {
        "baseline": f.get("baseline"),
        "timepoints": out,
        "response": None if not response else {
            "label": response["label"], "category": response["category"],
            "category_name": CATEGORY_NAMES.get(response["category"], response["category"]),
            "preliminary": bool(response.get("preliminary")), "sentence": response.get("sentence"),
            **{method: _method(response.get(method)) for method in ("bidimensional", "volumetric")}},
        "recurrence": {"available": available, "probability": recurrence.get("probability"),
                       "threshold": recurrence.get("threshold"), "called": recurrence.get("called"),
                       "model": recurrence.get("model"),
                       "text": (recurrence.get("sentence") or recurrence.get("note") or RECURRENCE_NOT_AVAILABLE)},
    }


def _label_at(tps, index) -> Optional[str]:
    return tps[index]["label"] if isinstance(index, int) and 0 <= index < len(tps) else None


def _rano_lesion(lesion: dict) -> dict:
    d = lesion["diameters"]
    return {"track_id": lesion.get("track_id"), "status": lesion.get("status"), "hemisphere": lesion.get("hemisphere"),
            "long_mm": _round(d.get("long_mm"), MM_DECIMALS), "short_mm": _round(d.get("short_mm"), MM_DECIMALS),
            "product_mm2": _round(d.get("product_mm2"), MM_DECIMALS), "measurable": bool(d.get("measurable")),
            "edited": bool(d.get("edited"))}


def _method(m: Optional[dict]) -> Optional[dict]:
    if not m:
        return None
    return {"category": m.get("category"), "percent_from_baseline": _round(m.get("percent_from_baseline"), PERCENT_DECIMALS),
            "percent_from_nadir": _round(m.get("percent_from_nadir"), PERCENT_DECIMALS)}


def _models(inputs: ReportInputs) -> dict:
    s, f = inputs.survival, inputs.followup
    survival = None
    if s is not None:
        m = s["model"]
        survival = f"{m.get('name')} ({m.get('variant')} model)"
    return {"gliomasuite_version": __version__,
            "segmentation": inputs.stamp or None,
            "survival": survival,
            "survival_gliomasuite_version": s.get("gliomasuite_version") if s else None,
            "followup_gliomasuite_version": f.get("gliomasuite_version") if f else None,
            "followup_segmented_by": sorted({tp.get("segmented_by") or "unknown" for tp in f["timepoints"]}) if f else None}


def _round(value, decimals: int):
    if value is None:
        return None
    value = float(value)
    return round(value, decimals) if math.isfinite(value) else None


def _person_name(value: Optional[str]) -> Optional[str]:
    """DICOM's ``FAMILY^GIVEN^MIDDLE`` as ``FAMILY, GIVEN MIDDLE``."""
    if not value:
        return None
    parts = [p.strip() for p in value.split("=")[0].split("^")]
    family, rest = parts[0], " ".join(p for p in parts[1:] if p)
    return f"{family}, {rest}" if family and rest else (family or rest or None)


def _iso_date(value: Optional[str]) -> Optional[str]:
    from ..followup.timepoints import parse_date

    if not value:
        return None
    try:
        return parse_date(value).isoformat()
    except GliomaSuiteError:
        return value


def _file_format(path: Path) -> str:
    name = Path(path).name.lower()
    for suffixes, fmt in (((".nii", ".nii.gz"), "NIfTI"), ((".nrrd", ".nhdr"), "NRRD"), ((".mha", ".mhd"), "MetaImage")):
        if name.endswith(suffixes):
            return fmt
    return "image files"


# ----------------------------------------------------------------------------------------------
# de-identification


def pseudonym(identifier: str) -> str:
    """A stable pseudonymous id: the first 8 hex digits of the SHA-256 of ``identifier``."""
    return hashlib.sha256(identifier.strip().encode("utf-8")).hexdigest()[:8]


def deidentified(report: dict, inputs: ReportInputs) -> dict:
    """``report`` without identifiers, dates, time point names and paths (see the module docstring)."""
    header = inputs.dicom
    identifier = header.get("patient_id") or header.get("patient_name") or report["study"]["id"]
    secrets = [header.get(k) for k in ("patient_name", "patient_id", "birth_date", "study_id", "accession")]
    secrets += [report["patient"]["name"], report["study"]["id"]]
    if inputs.study_label.lower() not in GENERIC_FOLDER_NAMES:
        secrets.append(inputs.study_label)
    secrets += re.split(r"[\^=, ]+", header.get("patient_name", ""))
    paths = [inputs.study_path, inputs.segmentation, inputs.survival_path, inputs.followup_path]
    paths = [str(p) for p in paths if p] + [os.path.abspath(p) for p in paths if p]
    renamed = {}
    if report["followup"]:
        renamed = {tp["label"]: f"TP{i + 1}" for i, tp in enumerate(report["followup"]["timepoints"])}
        secrets += [Path(str(p)).name for tp in (inputs.followup or {}).get("timepoints", [])
                    for p in (tp.get("seg"), tp.get("source")) if isinstance(p, str)]

    def scrub(value):
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if not isinstance(value, str):
            return value
        for path in sorted(set(paths), key=len, reverse=True):
            value = value.replace(path, "[path removed]")
        if renamed:  # in one pass, so a time point once called "TP2" is not renamed twice
            names = "|".join(re.escape(old) for old in sorted(renamed, key=len, reverse=True))
            value = re.sub(rf"(?<![A-Za-z0-9])({names})(?![A-Za-z0-9])", lambda m: renamed[m.group(1)], value)
        for secret in sorted({s.strip() for s in secrets if s and len(s.strip()) >= 2}, key=len, reverse=True):
            value = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", DEIDENTIFIED, value,
                           flags=re.IGNORECASE)
        value = re.sub(r"(?<!\d)(19|20)\d\d-?[01]\d-?[0-3]\d(?!\d)", DATE_REMOVED, value)
        return value

    out = scrub(report)
    out["patient"].update(deidentified=True, pseudonym=pseudonym(identifier), name=DEIDENTIFIED, id=DEIDENTIFIED,
                          birth_date=DEIDENTIFIED)
    out["study"].update(id=DEIDENTIFIED, date=DEIDENTIFIED)
    out["inputs"] = None
    if out["followup"]:
        out["followup"]["baseline"] = renamed.get(report["followup"]["baseline"], out["followup"]["baseline"])
        for tp in out["followup"]["timepoints"]:
            tp["date"] = None
        if out["figures"]["followup"]:
            out["figures"]["followup"] = None
            out["quality"]["flags"].append({"source": "follow-up", "level": "note", "text": (
                "The follow-up figure is left out of a de-identified report: it shows the scan dates and names.")})
    return out


# ----------------------------------------------------------------------------------------------
# report.csv


def number_rows(report: dict) -> List[tuple]:
    """Every number the PDF shows as ``(section, item, value, unit)``, from ``report.json``'s content."""
    rows: List[tuple] = []

    def add(section, item, value, unit=""):
        if value is not None and not isinstance(value, bool):
            rows.append((section, item, value, unit))

    add("patient", "age", report["patient"]["age_years"], "years")
    add("segmentation", "voxel volume", report["segmentation"]["voxel_volume_mm3"], "mm³")
    for region in REGIONS:
        add("volumes", region, report["volumes"][region]["cm3"], "cm³")
    lesions = report["lesions"]
    add("lesions", "count", lesions["count"])
    add("lesions", "whole tumour on the left", lesions["left_percent"], "%")
    for lesion in lesions["listed"]:
        add("lesions", f"lesion {lesion['number']} volume", lesion["volume_cm3"], "cm³")
        add("lesions", f"lesion {lesion['number']} enhancing tumour", lesion["enhancing_cm3"], "cm³")
    for view in ("axial", "coronal", "sagittal"):
        k = report["key_slices"][view]
        add("key slices", f"{view} slice", k["index"], "index")
        add("key slices", f"{view} position {k['axis']}", k["position_mm"], "mm")
    s = report["survival"]
    if s:
        add("survival", "age", s["age_years"], "years")
        add("survival", "median survival", s["median_months"], "months")
        add("survival", "median survival 95% CI lower", s["median_ci95_months"][0], "months")
        add("survival", "median survival 95% CI upper", s["median_ci95_months"][1], "months")
        for months, p in s["p_alive"].items():
            if p:
                add("survival", f"P(alive) at {months} months", p["percent"], "%")
                add("survival", f"P(alive) at {months} months 95% CI lower", p["lower_percent"], "%")
                add("survival", f"P(alive) at {months} months 95% CI upper", p["upper_percent"], "%")
        add("survival", "hazard ratio vs cohort average", s["hazard_ratio"])
        add("survival", "similar patients (SOM)", s["similar_patients"], "patients")
        add("survival", "similar patients median survival", s["similar_median_months"], "months")
        add("survival", "cross-validated C-index", s["cv_cindex"])
    f = report["followup"]
    if f:
        for tp in f["timepoints"]:
            section = f"follow-up {tp['label']}"
            add(section, "days from baseline", tp["days_from_baseline"], "days")
            for region in REGIONS:
                add(section, region, tp["volumes_cm3"][region], "cm³")
                add(section, f"{region} change from baseline", tp["change_from_baseline_percent"][region], "%")
                add(section, f"{region} change from nadir", tp["change_from_nadir_percent"][region], "%")
            add(section, "sum of products", tp["sum_of_products_mm2"], "mm²")
            for lesion in tp["lesions"]:
                name = f"lesion {lesion['track_id']}"
                add(section, f"{name} long diameter", lesion["long_mm"], "mm")
                add(section, f"{name} short diameter", lesion["short_mm"], "mm")
                add(section, f"{name} product", lesion["product_mm2"], "mm²")
        response = f["response"]
        if response:
            for method in ("bidimensional", "volumetric"):
                m = response[method]
                if m:
                    add("RANO 2.0", f"{method} change from baseline", m["percent_from_baseline"], "%")
                    add("RANO 2.0", f"{method} change from nadir", m["percent_from_nadir"], "%")
        add("recurrence", "P(recurrence) at the latest scan", f["recurrence"]["probability"])
        add("recurrence", "decision threshold", f["recurrence"]["threshold"])
    return rows
