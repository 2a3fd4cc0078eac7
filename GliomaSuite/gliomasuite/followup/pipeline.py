"""One patient's follow-up: time points in, registered, segmented, measured and judged by RANO 2.0.

:func:`compare_timepoints` is the single per-patient function the command line (``gliomasuite
followup``), the Slicer module's background runner and cohort runs call. It orders the time points
by date, registers each to the baseline (rigid by default, SimpleITK), segments each with the shipped
engine unless the reader gave a label map, brings every segmentation into the baseline's frame,
tracks enhancing lesions, measures their RANO diameters, and assesses the response of each later
scan both bidimensionally and volumetrically, against the baseline for decreases and the nadir for
increases. Everything written goes to a temporary folder beside ``out_dir`` that is renamed into
place at the end, so a failure or a cancel leaves no half-written follow-up.
"""

import datetime
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from .. import labels as L
from ..errors import GliomaSuiteError
from ..modalities import display_name
from . import rano
from .labelmaps import joint_convention, read_reader_labels
from .lesions import track_lesions
from .registration import RIGID, register_to_baseline, resample_to_baseline, save_transform
from .timepoints import TimePoint, check_same_patient, nadir_before, order_timepoints, study_date_from_dicom

#: Registration modality, best first: enhancing rims and the resection cavity are sharpest on T1ce.
REGISTRATION_ORDER = ("t1ce", "t1", "flair", "t2")
REGIONS = ("NCR", "ED", "ET", "TC", "WT")
#: Why the shipped networks are not trusted blindly on a follow-up (said in the output).
POST_TREATMENT_CAUTION = (
    "{label} was segmented by {model}, which learned from pre-operative scans only: a resection cavity, "
    "blood products or treatment-related enhancement may be mislabelled; review its segments before relying on "
    "the response.")
SCHEMA_VERSION = 1

Progress = Callable[[float, str], None]


@dataclass
class _Loaded:
    """What one time point brought, in its own frame."""

    tp: TimePoint
    study: Optional[object] = None           # gliomasuite.study.Study, when images were given
    labels: Optional[sitk.Image] = None      # BraTS labels on the time point's own grid
    cavity: Optional[sitk.Image] = None      # resection cavity (reader's post-treatment labels only)
    segmented_by: str = ""                   # a model name, or "reader" for a given label map
    notes: List[str] = field(default_factory=list)

    @property
    def grid(self) -> sitk.Image:
        return self.study.reference if self.study is not None else self.labels


def compare_timepoints(timepoints: Sequence[TimePoint], out_dir, *, baseline=None,
                       rt_end: Optional[datetime.date] = None, idh: Optional[str] = None,
                       label_convention: str = "auto", registration: str = RIGID, device: str = "auto",
                       model: Optional[str] = None, check_brain: bool = True, recurrence: bool = True,
                       progress: Optional[Progress] = None, note: Callable[[str], None] = lambda m: None,
                       recurrence_model: Optional[str] = None) -> dict:
    """Run the follow-up of one patient and write it to ``out_dir`` (see the module docstring).

    ``recurrence_model``: a registered recurrence model's name or a recurrence weights file (default: the
    shipped model).

    ``registration`` is ``"rigid"``, ``"affine"`` or ``"none"`` (the time points are already aligned
    on one grid, as TCIA's Brain-Tumor-Progression pairs are). Returns the ``followup.json`` content.
    """
    report = progress or (lambda f, m: None)
    out_dir = Path(out_dir)
    if idh is not None and idh not in rano.IDH_VALUES:
        raise GliomaSuiteError(f"IDH status {idh!r} is not understood: give --idh mutant or --idh wildtype.")
    if registration not in (RIGID, "affine", "none"):
        raise GliomaSuiteError(f"Unknown registration {registration!r}: choose rigid, affine or none.")
    notes: List[str] = []

    def say(text: str) -> None:
        notes.append(text)
        note(text)

    ordered = order_timepoints(list(timepoints), baseline)
    for text in ordered.notes:
        say(text)
    tps, b = ordered.timepoints, ordered.baseline_index
    if rt_end is not None and any(tp.date is None for tp in tps):
        raise GliomaSuiteError("--rt-end needs the date of every time point (--dates, or DICOM StudyDate), to tell "
                               "whether a progression falls within 12 weeks of radiotherapy.")

    given = [tp.seg for tp in tps if tp.seg is not None]
    if given and label_convention == "auto":
        label_convention, why = joint_convention(given)
        say(f"The label maps were read as {label_convention} labels: {why}.")
    _check_patients(tps)  # before any segmentation: scans of two patients are refused at once
    share = 0.6 / len(tps)
    loaded = []
    for i, tp in enumerate(tps):
        doing = "Loading" if tp.seg is not None else "Loading and segmenting"
        report(i * share, f"{doing} {tp.label} ({i + 1}/{len(tps)})")
        loaded.append(_load(tp, label_convention, device, model, check_brain,
                            lambda f, m, i=i: report((i + f) * share, f"{tp.label}: {m}"), say))

    base = loaded[b]
    frames = []
    for i, item in enumerate(loaded):
        if i != b:
            report(0.6 + 0.25 * i / len(loaded), f"Registering {item.tp.label} to the baseline {base.tp.label}")
        frames.append(_register(item, base, registration, say) if i != b else None)

    report(0.85, "Measuring lesions and assessing the response")
    on_base = [_to_baseline(item, base, frame) for item, frame in zip(loaded, frames)]
    result = _assess(loaded, on_base, frames, b, rt_end, idh, say)
    recurrence_map = None
    if recurrence:
        report(0.88, "Recurrence model: P(recurrence) and where tumour is expected next")
        result["recurrence"], recurrence_map = _recurrence(loaded, on_base, frames, b, say, recurrence_model)
    else:
        result["recurrence"] = {"available": False, "sentence": "The recurrence model was not run (as asked)."}
    result.update(schema_version=SCHEMA_VERSION, baseline=base.tp.label, registration_kind=registration,
                  idh=idh, rt_end=rt_end.isoformat() if rt_end else None, label_convention=label_convention,
                  notes=notes)
    report(0.92, f"Writing {out_dir}")
    _write(out_dir, result, loaded, on_base, frames, b, recurrence_map, say)
    report(1.0, "Follow-up written")
    return result


# ----------------------------------------------------------------------------------------------
# loading


def _load(tp: TimePoint, convention, device, model_name, check_brain, report: Progress, say) -> _Loaded:
    from ..study import grid_differences, load_study

    item = _Loaded(tp)
    if tp.source is not None:
        item.study = load_study(tp.source, required=(), log=lambda m: say(f"{tp.label}: {m}"))
    if tp.seg is not None:
        labels, read = read_reader_labels(tp.seg, convention)
        if item.study is not None:
            diffs = grid_differences(labels, item.study.reference)
            if diffs:
                raise GliomaSuiteError(
                    f"The label map {tp.seg} of {tp.label} is not on the grid of its "
                    f"{display_name(item.study.reference_modality)} image ({', '.join(diffs)} differ); give the "
                    "label map drawn on this time point's images.")
            labels.CopyInformation(item.study.reference)
        item.labels, item.segmented_by = labels, "reader"
        if read.convention == "post-treatment":  # the only labels that mark a cavity: 0 cm3 is a finding
            item.cavity = _like(read.cavity.astype(np.uint8), labels)
        say(f"{tp.label}: the reader's label map {Path(tp.seg).name} ({read.note}).")
        return item
    item.labels = _segment(item, device, model_name, check_brain, report, say)
    return item


def _segment(item: _Loaded, device, model_name, check_brain, report, say) -> sitk.Image:
    from ..segmentation.inference import default_model_for, load_model, required_modalities, segment_study

    study, label = item.study, item.tp.label
    model, _ = load_model(model_name or default_model_for(study.images))
    missing = [m for m in required_modalities(model) if m not in study.images]
    has = ", ".join(display_name(m) for m in study.modalities)
    if "t1ce" not in study.images:
        raise GliomaSuiteError(
            f"{label} has no T1ce ({has} only), so its enhancing tumour, on which RANO 2.0 reads the response, cannot "
            f"be assessed, and no shipped model segments it without T1ce; add its T1ce, or give the reader's label "
            f"map for {label} with --seg.")
    if missing:
        raise GliomaSuiteError(
            f"{label} has only {has}, and {model.name} cannot segment it without "
            f"{' and '.join(display_name(m) for m in missing)}; add {'that image' if len(missing) == 1 else 'those images'}, or give the reader's label map for "
            f"{label} with --seg.")
    result = segment_study(study, model=model, device=device, progress=report, check_brain=check_brain)
    if result.brain_check:
        raise GliomaSuiteError(f"{label} was not segmented because the brain check failed ("
                               + "; ".join(result.brain_check) + "); give its label map with --seg, or run again "
                               "with --skip-brain-check if it is skull-stripped brain MRI.")
    for w in result.warnings:
        say(f"{label}: {w}")
    item.segmented_by = result.model
    say(POST_TREATMENT_CAUTION.format(label=label, model=result.model))
    return result.labels


def _check_patients(tps: List[TimePoint]) -> None:
    """Refuse DICOM time points of different patients; NIfTI cannot tell, registration quality warns."""
    ids = {}
    for tp in tps:
        source = tp.source
        if source is not None and Path(str(source)).is_dir():
            try:
                date, patient = study_date_from_dicom(source)
            except GliomaSuiteError:
                continue
            ids[tp.label] = patient
    check_same_patient(ids)


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


# ----------------------------------------------------------------------------------------------
# registration


def _register(item: _Loaded, base: _Loaded, kind: str, say):
    """The time point's transform to the baseline (sitk.Transform, result or None)."""
    label = item.tp.label
    if kind == "none" or item.study is None or base.study is None:
        from ..study import grid_differences

        diffs = grid_differences(item.grid, base.grid)
        why = ("as asked with --registration none" if kind == "none"
               else "there are no images to register for " + (label if item.study is None else base.tp.label))
        if diffs:
            raise GliomaSuiteError(
                f"{label} cannot be compared with the baseline {base.tp.label}: not registered ({why}) and not on "
                f"the baseline's grid ({', '.join(diffs)} differ); give images for both so they can be registered.")
        say(f"{label}: not registered ({why}); taken as aligned with the baseline, on the same grid.")
        return sitk.Transform(3, sitk.sitkIdentity), None
    common = [m for m in REGISTRATION_ORDER if m in item.study.images and m in base.study.images]
    if not common:
        raise GliomaSuiteError(
            f"{label} ({', '.join(map(display_name, item.study.modalities))}) and the baseline {base.tp.label} "
            f"({', '.join(map(display_name, base.study.modalities))}) share no sequence to register them by; give "
            "one sequence (T1ce best) at both.")
    modality = common[0]
    result = register_to_baseline(base.study.images[modality], item.study.images[modality], kind=kind)
    say(f"{label}: registered to {base.tp.label} by its {display_name(modality)} ({kind}); brain correlation "
        f"{result.correlation:.2f} after registration.")
    if result.warning:
        say(f"{label}: {result.warning}")
    return result.transform, result


def _to_baseline(item: _Loaded, base: _Loaded, frame) -> dict:
    """The time point's labels (and cavity, images) resampled into the baseline's frame."""
    if frame is None:
        labels, cavity, images = item.labels, item.cavity, dict(item.study.images) if item.study else {}
    else:
        transform = frame[0]
        labels = resample_to_baseline(item.labels, base.grid, transform, is_label=True)
        cavity = resample_to_baseline(item.cavity, base.grid, transform, is_label=True) if item.cavity is not None else None
        images = {m: resample_to_baseline(im, base.grid, transform) for m, im in
                  (item.study.images.items() if item.study else ())}
    return {"labels": labels, "cavity": cavity, "images": images}


# ----------------------------------------------------------------------------------------------
# measuring and judging


def _volumes(labels: sitk.Image) -> Dict[str, float]:
    return {k: round(v, 3) for k, v in L.volumes_cm3(sitk.GetArrayViewFromImage(labels),
                                                     labels.GetSpacing()).items()}


def _change(values: List[float], index: int, b: int) -> dict:
    """Percent change of ``values[index]`` from the baseline and from the nadir before it."""
    if index <= b:
        return {"from_baseline_percent": None, "from_nadir_percent": None, "nadir": None}
    nadir_index, nadir = nadir_before(values, index, b)
    return {"from_baseline_percent": rano.percent_change(values[index], values[b]),
            "from_nadir_percent": rano.percent_change(values[index], nadir), "nadir": nadir_index}


def enhancing_lesions(labels: np.ndarray) -> np.ndarray:
    """Enhancing lesions as RANO measures them: each tumour-core component (enhancing tumour and the necrosis
    it encloses) that holds enhancing tumour. A ring-enhancing lesion is measured across its necrotic centre,
    as readers do, and stays one lesion; a resection cavity is not tumour core, so it is never measured."""
    from scipy import ndimage

    core, _ = ndimage.label(np.isin(labels, L.REGIONS["TC"]), structure=np.ones((3, 3, 3), bool))
    enhancing = np.unique(core[labels == L.ET])
    return np.isin(core, enhancing[enhancing > 0])


def _assess(loaded, on_base, frames, b, rt_end, idh, say) -> dict:
    grid = loaded[b].grid
    et_masks = [enhancing_lesions(sitk.GetArrayFromImage(o["labels"])) for o in on_base]
    tracks = track_lesions(et_masks, grid, measure=True)
    wt_tracks = None
    if idh == "mutant":
        wt_masks = [np.isin(sitk.GetArrayFromImage(o["labels"]), L.REGIONS["WT"]) for o in on_base]
        wt_tracks = track_lesions(wt_masks, grid, measure=True)
    # Volumes in each time point's own grid (no resampling loss); lesions in the baseline frame.
    volumes = [_volumes(item.labels) for item in loaded]
    timepoints = []
    for i, item in enumerate(loaded):
        frame = frames[i]
        timepoints.append({
            "label": item.tp.label, "source": _source_json(item.tp.source),
            "seg": None if item.tp.seg is None else str(item.tp.seg),
            "date": item.tp.date.isoformat() if item.tp.date else None,
            "days_from_baseline": item.tp.days_from_baseline, "is_baseline": i == b,
            "is_pre_baseline": item.tp.is_pre_baseline,
            "modalities": list(item.study.modalities) if item.study else [],
            "segmented_by": item.segmented_by,
            "registration": None if i == b else (frame[1].to_dict() if frame[1] is not None else
                                                 {"kind": "none", "note": "taken as aligned"}),
            "volumes_cm3": volumes[i],
            "cavity_cm3": (round(float(sitk.GetArrayViewFromImage(item.cavity).sum()) *
                                 float(np.prod(item.cavity.GetSpacing())) / 1000, 3) if item.cavity is not None else None),
            "lesions": [les.to_dict() for les in tracks.at(i)],
            "non_enhancing_lesions": [les.to_dict() for les in wt_tracks.at(i)] if wt_tracks else None,
        })
    for region in REGIONS:
        series = [v[region] for v in volumes]
        for i, tp in enumerate(timepoints):
            tp.setdefault("volume_change", {})[region] = _change(series, i, b)
    result = {"timepoints": timepoints, "tracks": tracks.summary()}
    judge(result, b, rt_end, idh)
    return result


def _recurrence(loaded, on_base, frames, b, say, name: Optional[str] = None):
    """followup.json's "recurrence" entry and the next-visit map (baseline frame), from the baseline on."""
    from ..recurrence.inference import Visit, load_recurrence_model, predict_recurrence

    visits = []
    for i in range(b, len(loaded)):
        item, placed = loaded[i], on_base[i]
        days = item.tp.days_from_baseline
        failed = frames[i] is not None and frames[i][1] is not None and frames[i][1].warning is not None
        visits.append(Visit(item.tp.label, dict(placed["images"]), placed["labels"],
                            None if days is None else float(days), registration_failed=failed))
    try:
        model, entry = load_recurrence_model(name)
        outcome = predict_recurrence(visits, loaded[b].grid, model=model, name=model.name)
    except GliomaSuiteError as exc:  # e.g. a damaged weights file: said, and no number
        say(f"Recurrence model: {exc}")
        return {"available": False, "sentence": str(exc)}, None
    for text in outcome.notes:
        say(f"Recurrence model: {text}")
    entry_json = {"available": True, "model": outcome.model, "version": entry.get("version"),
                  "card": entry.get("card"), "probability": None if outcome.probability is None else round(outcome.probability, 4),
                  "threshold": outcome.threshold, "called": outcome.called, "reasons": outcome.reasons,
                  "latest": visits[-1].label, "timepoints_used": [v.label for v in visits if "t1ce" in v.images],
                  "sentence": outcome.sentence(), "map": None,
                  "limits": "Trained on simulated growth and treatment from real pre-operative baselines; on real "
                            "follow-ups it was checked only as its model card states. Research use, not for diagnosis."}
    return entry_json, outcome.map


def _source_json(source):
    """A time point's source as JSON: a path, a list of paths, or {modality: path}."""
    if source is None:
        return None
    if isinstance(source, dict):
        return {m: str(p) for m, p in source.items()}
    if isinstance(source, (list, tuple)):
        return [str(p) for p in source]
    return str(source)


def _scan(tp: dict) -> rano.Scan:
    """The RANO measurements of one time point of a ``followup.json`` result."""
    lesions = tp["lesions"]
    measurable = [les for les in lesions if les["diameters"] and les["diameters"]["measurable"]]
    scan = rano.Scan(sum_of_products_mm2=sum(les["diameters"]["product_mm2"] for les in measurable),
                     enhancing_volume_cm3=tp["volumes_cm3"]["ET"],
                     non_measurable_enhancing=len(measurable) < len(lesions),
                     new_lesions=[("midline" if les["hemisphere"] == "midline" else f"{les['hemisphere']} hemisphere")
                                  for les in measurable if les["status"] == "new"],
                     date=datetime.date.fromisoformat(tp["date"]) if tp["date"] else None)
    if tp.get("non_enhancing_lesions") is not None:
        scan.non_enhancing_sum_of_products_mm2 = sum(
            les["diameters"]["product_mm2"] for les in tp["non_enhancing_lesions"]
            if les["diameters"] and les["diameters"]["measurable"])
        scan.non_enhancing_volume_cm3 = tp["volumes_cm3"]["WT"]
    return scan


def judge(result: dict, baseline_index: int, rt_end: Optional[datetime.date] = None,
          idh: Optional[str] = None) -> dict:
    """Fill in, from the measurements in ``result`` (``followup.json``), each time point's sum of
    products and the RANO 2.0 response of every scan after the baseline, both ways.

    Reads only the JSON, so a reader who moved a diameter (the Slicer tab's line nodes) gets the
    response judged again by the same rules: change a lesion's ``diameters`` and call this again.
    """
    b = baseline_index
    scans = [_scan(tp) for tp in result["timepoints"]]
    for tp, scan in zip(result["timepoints"], scans):
        tp["sum_of_products_mm2"] = round(float(scan.sum_of_products_mm2), 1)
    responses = []
    for i in range(b + 1, len(scans)):
        entry = {"label": result["timepoints"][i]["label"]}
        for method in (rano.BIDIMENSIONAL, rano.VOLUMETRIC):
            assessed = rano.assess(scans[i], scans[b], scans[b + 1:i], method=method, idh=idh, rt_end=rt_end)
            entry[method] = {**assessed.to_dict(), "sentence": rano.describe(assessed)}
        entry["category"] = entry[rano.BIDIMENSIONAL]["category"]
        entry["preliminary"] = entry[rano.BIDIMENSIONAL]["preliminary"]
        entry["sentence"] = entry[rano.BIDIMENSIONAL]["sentence"]
        if entry[rano.VOLUMETRIC]["category"] != entry["category"]:
            clause = entry[rano.VOLUMETRIC]["sentence"].split(": ", 1)[-1].rstrip(".")
            entry["sentence"] += f" Volumetrically: {rano.CATEGORY_NAMES[entry[rano.VOLUMETRIC]['category']]}: {clause}."
        responses.append(entry)
    result["responses"] = responses
    result["response"] = responses[-1] if responses else None
    return result


def remeasure(result: dict, timepoint: str, track_id: int, long_mm: float, short_mm: float,
              long_ends_lps=None, short_ends_lps=None) -> dict:
    """A reader's own diameters (mm) for one lesion at one time point; the response is judged again.

    ``result`` is a ``followup.json`` dict (changed in place and returned); the lesion is named by its
    time point label and track id, as the Slicer tab's line nodes record them. The lines' end points
    (LPS mm, two each), when given, replace the measured ones, so the saved result shows where the
    reader drew them.
    """
    for value, what in ((long_mm, "long"), (short_mm, "short")):
        if not (value >= 0 and np.isfinite(value)):
            raise GliomaSuiteError(f"The {what} diameter {value!r} is not a length: give millimetres, 0 or more.")
    tp = next((t for t in result["timepoints"] if t["label"] == timepoint), None)
    if tp is None:
        raise GliomaSuiteError(f"There is no time point {timepoint!r} in this follow-up.")
    lesion = next((les for les in tp["lesions"] if les["track_id"] == track_id), None)
    if lesion is None or not lesion["diameters"]:
        raise GliomaSuiteError(f"{timepoint} has no measured enhancing lesion {track_id}.")
    if long_mm < short_mm:  # the reader's "short" line is now the longer one: it is the long diameter
        long_mm, short_mm, long_ends_lps, short_ends_lps = short_mm, long_mm, short_ends_lps, long_ends_lps
    lesion["diameters"].update(long_mm=float(long_mm), short_mm=float(short_mm),
                               product_mm2=float(long_mm * short_mm),
                               measurable=rano.is_measurable(long_mm, short_mm), edited=True)
    for key, ends in (("long_ends_lps", long_ends_lps), ("short_ends_lps", short_ends_lps)):
        if ends is not None:
            lesion["diameters"][key] = [[float(v) for v in point] for point in ends]
    b = next(i for i, t in enumerate(result["timepoints"]) if t["is_baseline"])
    rt_end = datetime.date.fromisoformat(result["rt_end"]) if result.get("rt_end") else None
    return judge(result, b, rt_end, result.get("idh"))


# ----------------------------------------------------------------------------------------------
# writing


def _write(out_dir: Path, result: dict, loaded, on_base, frames, b, recurrence_map=None, say=lambda m: None) -> None:
    from ..outputs import make_parents, remove_made, write_image_atomically, write_json_atomically
    from .figure import plot_followup
    from .tables import write_followup_csv

    made = make_parents(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        for i, (item, placed) in enumerate(zip(loaded, on_base)):
            name = _safe(item.tp.label)
            write_image_atomically(placed["labels"], staging / "segmentations" / f"{name}.nii.gz",
                                   model=item.segmented_by)
            result["timepoints"][i]["files"] = {"segmentation": f"segmentations/{name}.nii.gz"}
            for modality, image in placed["images"].items():
                rel = f"registered/{name}_{modality}.nii.gz"
                write_image_atomically(sitk.Cast(image, sitk.sitkFloat32), staging / rel)
                result["timepoints"][i]["files"][modality] = rel
            if frames[i] is not None and frames[i][1] is not None:  # a registration ran: its .tfm
                rel = f"transforms/{name}_to_baseline.tfm"
                (staging / "transforms").mkdir(exist_ok=True)
                sitk.WriteTransform(frames[i][0], str(staging / rel))
                result["timepoints"][i]["files"]["transform"] = rel
        if recurrence_map is not None:
            rel = "recurrence/next_visit_probability.nii.gz"
            write_image_atomically(recurrence_map, staging / rel, model=result["recurrence"].get("model"))
            result["recurrence"]["map"] = rel
        _write_dicom(staging, result, loaded, b, say)
        write_followup_csv(result, staging / "followup.csv")
        plot_followup(result, on_base, staging / "followup.png", recurrence_map)
        result["files"] = {"csv": "followup.csv", "figure": "followup.png"}
        write_json_atomically(result, staging / "followup.json")
        if out_dir.exists():
            shutil.rmtree(out_dir)  # the caller checked it is ours to replace (empty or --overwrite)
        staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if not out_dir.exists():
            remove_made(made)


def _write_dicom(staging: Path, result: dict, loaded, b, say) -> None:
    """For each time point read from DICOM: a DICOM SEG of its segmentation on its own series and a TID 1500
    SR of its volumes with the time point's context (its label, its order from the baseline), so each scan's
    results go back to the PACS beside that scan. Skipped, with a note, without highdicom."""
    from ..report.dicom import SEG_SR_FAILURES, dicom_unavailable, is_dicom_study, write_seg_and_sr

    dicom = [i for i, item in enumerate(loaded) if item.study is not None and is_dicom_study(item.study)]
    if not dicom:
        return
    problem = dicom_unavailable()
    if problem:
        say(f"{problem[:-1]}; no DICOM SEG or SR was written for the time points (the rest of the follow-up was).")
        return
    (staging / "dicom").mkdir()
    for i in dicom:
        item = loaded[i]
        name = _safe(item.tp.label)
        labels = sitk.Cast(item.labels, sitk.sitkUInt8)
        if not np.any(sitk.GetArrayViewFromImage(labels)):
            say(f"{item.tp.label}: no tumour in its segmentation, so no DICOM SEG or SR was written for it.")
            continue
        try:
            write_seg_and_sr(labels, item.study, staging / "dicom" / f"{name}-seg.dcm",
                             staging / "dicom" / f"{name}-sr.dcm", item.segmented_by,
                             automatic=item.segmented_by != "reader",
                             time_point="baseline" if i == b else item.tp.label, time_point_order=i + 1)
        except SEG_SR_FAILURES as exc:
            say(f"{item.tp.label}: no DICOM SEG or SR was written ({exc}).")
            continue
        result["timepoints"][i]["files"].update(dicom_seg=f"dicom/{name}-seg.dcm", dicom_sr=f"dicom/{name}-sr.dcm")


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label) or "timepoint"
