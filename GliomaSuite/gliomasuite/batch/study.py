"""One study of a cohort: segmented, measured, scored, and written as one folder that appears whole.

:func:`process_study` is the per-study pipeline of ``gliomasuite batch``: it loads and segments the
study exactly as ``gliomasuite segment`` does (the model named, else the shipped one for the
modalities present), measures the tumour (:func:`gliomasuite.survival.features.label_map_features`)
and, given the patient's age, scores survival (``survival.json``, ``survival.png``). Everything is
written into a hidden staging folder beside the study's output folder and renamed into place at the
end, so a worker killed mid-study (out of memory, a pre-empted cluster job) leaves no partial folder:
the study is either finished, with its ``result.json``, or not there.

``result.json`` carries the study's *key*: SHA-256 over the input files' **contents** (each file's
path within the study, size and bytes, read in 1 MB chunks), the models (registry entries with their
weights' SHA-256, or a weights file's SHA-256; the survival model files' SHA-256), the gliomasuite
version, the age and the brain-check choice. A rerun skips a study whose stored key matches and
segments again one whose inputs or models changed. Contents rather than size + modification time:
copies, restores from backup and re-exports that keep the time stamps are caught; the price is
reading every input once per run (about 10 MB per compressed BraTS study: a few hundredths of a
second, far less than segmenting it).

Models are loaded once per process and kept (:data:`MODELS`): a Dask worker loads them for its
first study and reuses them for every later one.
"""

import hashlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from .. import __version__
from ..errors import GliomaSuiteError
from ..modalities import ALWAYS_NEEDED, MODALITIES
from ..registry import REGISTRY, load_registry

SCHEMA_VERSION = 1
RESULT_FILE = "result.json"
SEGMENTATION_FILE = "segmentation.nii.gz"
SURVIVAL_FILE = "survival.json"
SURVIVAL_PLOT = "survival.png"
HASH_CHUNK = 1 << 20
#: Staging and set-aside folders are hidden siblings of the study's folder: ``.ID.partial-...``, ``.ID.old-...``.
PARTIAL_TAG, OLD_TAG = ".partial-", ".old-"


class BrainCheckFailed(GliomaSuiteError):
    """The study did not pass the brain check, so it was not segmented; ``reasons`` say why."""

    def __init__(self, message: str, reasons: List[str]):
        super().__init__(message)
        self.reasons = list(reasons)


@dataclass(frozen=True)
class StudySettings:
    """What every study of a run is processed with (sent to the workers with each task)."""

    model: Optional[str] = None           # segmentation model; None: the shipped one for the modalities present
    survival_model: Optional[str] = None  # None: the shipped survival model
    device: str = "auto"
    engine: str = "auto"
    check_brain: bool = True


class ModelCache:
    """Segmentation and survival models, each loaded on first use and kept for the life of the process."""

    def __init__(self):
        self._segmentation: Dict[Optional[str], object] = {}
        self._survival: Dict[Optional[str], tuple] = {}
        self._lock = threading.Lock()  # a worker running several studies at once loads each model once

    def segmentation(self, name: Optional[str]):
        from ..segmentation.inference import load_model

        with self._lock:
            if name not in self._segmentation:
                self._segmentation[name] = load_model(name)[0]
            return self._segmentation[name]

    def survival(self, name: Optional[str]) -> tuple:
        from ..survival.score import load_models

        with self._lock:
            if name not in self._survival:
                self._survival[name] = load_models(name)
            return self._survival[name]

    @property
    def loaded(self) -> List[str]:
        """Names of the models loaded so far (``None`` is the default), for tests and diagnostics."""
        return [f"segmentation:{n}" for n in self._segmentation] + [f"survival:{n}" for n in self._survival]


#: This process's models: a Dask worker's for its lifetime.
MODELS = ModelCache()


# ----------------------------------------------------------------------------------------------
# the key a rerun compares


def _sha256_file(path: Path, digest=None):
    digest = digest or hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest


def input_files(study) -> List[Path]:
    """The files of a study (a folder, searched through sub-folders, or one file), hidden ones left out."""
    path = Path(study)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise GliomaSuiteError(f"The study folder {path} does not exist; check the path.")
    files = []
    for root, folders, names in os.walk(path, followlinks=True):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        files += [Path(root) / n for n in names if not n.startswith(".") and (Path(root) / n).is_file()]
    return sorted(files, key=lambda f: f.relative_to(path).as_posix())


def input_checksum(study) -> str:
    """SHA-256 over each input file's relative path, size and contents (see the module docstring)."""
    path = Path(study)
    digest = hashlib.sha256()
    for file in input_files(path):
        name = file.name if file == path else file.relative_to(path).as_posix()
        digest.update(f"{name}\0{file.stat().st_size}\0".encode())
        _sha256_file(file, digest)
    return digest.hexdigest()


def _registered(name: str, models: dict) -> dict:
    entry = models[name]
    if "members" in entry:
        return {"name": name, "members": [_registered(m, models) for m in entry["members"] if m in models]}
    if "refiners" in entry:
        return {"name": name, "coarse": _registered(entry["coarse"], models) if entry.get("coarse") in models else None,
                "refiners": [_registered(r, models) for r in entry["refiners"] if r in models]}
    return {"name": name, "sha256": entry.get("sha256"), "version": entry.get("version")}


def model_fingerprint(model: Optional[str]) -> dict:
    """What identifies a segmentation model: its registry entry (members and weights' SHA-256) or its file's
    SHA-256. The default is the pair the modalities choose between."""
    from ..registry import DEFAULT_SEGMENTATION_MODEL, REDUCED_SEGMENTATION_MODEL  # not via inference: no torch here

    models = load_registry(REGISTRY)["models"] if REGISTRY.exists() else {}
    if model is None:
        return {"default": [_registered(m, models) for m in (DEFAULT_SEGMENTATION_MODEL, REDUCED_SEGMENTATION_MODEL)
                            if m in models]}
    if model in models:
        return _registered(model, models)
    if Path(model).is_file():
        return {"file": str(Path(model).resolve()), "sha256": _sha256_file(Path(model)).hexdigest()}
    raise GliomaSuiteError(f"No segmentation model named {model!r} (known: {', '.join(sorted(models)) or 'none'}) "
                           "and no such weights file.")


def survival_fingerprint(name: Optional[str]) -> dict:
    """The survival model files' SHA-256 (the full model and its reduced companion)."""
    from ..survival.score import load_models

    full, reduced = load_models(name)  # also refuses an unknown model, before any study is segmented
    return {model.name: _sha256_file(Path(model.source)).hexdigest() for model in (full, reduced) if model}


def run_fingerprint(settings: StudySettings, with_survival: bool) -> dict:
    """The part of every study's key that the run's settings give (computed once per run)."""
    return {"gliomasuite_version": __version__, "segmentation_model": model_fingerprint(settings.model),
            "survival_model": survival_fingerprint(settings.survival_model) if with_survival else None,
            "brain_check": settings.check_brain}


def study_key(inputs_sha256: str, fingerprint: dict, age: Optional[float]) -> dict:
    """The key stored in ``result.json``: its parts, and ``sha256`` over them."""
    parts = {"inputs_sha256": inputs_sha256, **fingerprint,
             "survival_model": fingerprint["survival_model"] if age is not None else None, "age": age}
    parts["sha256"] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return parts


def stored_result(out_dir) -> Optional[dict]:
    """A finished study's ``result.json``, or None when there is none (or it cannot be read)."""
    try:
        return json.loads((Path(out_dir) / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None


def why_stale(stored: dict, key: dict) -> str:
    """Why a study with an earlier result is processed again, in words."""
    old = stored.get("key") or {}
    names = {"inputs_sha256": "its input files", "segmentation_model": "the segmentation model",
             "survival_model": "the survival model", "gliomasuite_version": "the gliomasuite version",
             "age": "the age", "brain_check": "the brain-check setting"}
    changed = [label for part, label in names.items() if old.get(part) != key.get(part)]
    return " and ".join(changed[:2]) + " changed" if changed else "its earlier result is from another format"


# ----------------------------------------------------------------------------------------------
# one study


def _finite(values: Optional[dict]) -> Optional[dict]:
    if values is None:
        return None
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}


def _model_version(name: str) -> Optional[str]:
    models = load_registry(REGISTRY)["models"] if REGISTRY.exists() else {}
    return models.get(name, {}).get("version")


def process_study(study, out_dir, age: Optional[float] = None, *, study_id: Optional[str] = None,
                  settings: Optional[StudySettings] = None, key: Optional[dict] = None,
                  models: Optional[ModelCache] = None, note: Callable[[str], None] = lambda m: None,
                  progress: Optional[Callable[[float, str], None]] = None) -> dict:
    """Segment, measure and (with ``age``) score one study into ``out_dir``; return its ``result.json``.

    ``study`` is what ``gliomasuite segment`` takes (a folder, a list of files, ``{modality: path}``).
    ``key`` is the study's :func:`study_key` when the caller computed it (batch does, to decide what to
    skip); otherwise it is computed here. ``out_dir`` is replaced whole, only once everything is
    written. A problem with the study raises :class:`GliomaSuiteError` (a failed brain check
    :class:`BrainCheckFailed`) and writes nothing.
    """
    from ..outputs import write_image_atomically, write_json_atomically
    from ..segmentation.inference import default_model_for, required_modalities, segment_study
    from ..study import load_study
    from ..survival.cox import check_value

    start = time.perf_counter()
    settings = settings or StudySettings()
    models = models or MODELS
    report = progress or (lambda f, m: None)
    out_dir = Path(out_dir)
    if age is not None:
        age = check_value("age", age)
    if key is None:
        source = study if isinstance(study, (str, os.PathLike)) else None
        if source is None:
            raise GliomaSuiteError("Give the study as a folder (or one file) so its input files can be checksummed, "
                                   "or pass its key.")
        key = study_key(input_checksum(source), run_fingerprint(settings, age is not None), age)
    notes: List[str] = []

    def say(text: str) -> None:
        notes.append(text)
        note(text)

    # As cli.segment_arguments_study: a named model says which modalities are needed; otherwise the
    # study's modalities choose between the shipped default and the model trained without T1 and T2.
    report(0.0, "Loading the study")
    if settings.model:
        model = models.segmentation(settings.model)
        loaded = load_study(study, required=required_modalities(model), log=say)
    else:
        loaded = load_study(study, required=ALWAYS_NEEDED, log=say)
        model = models.segmentation(default_model_for(loaded.images))
    survival_models = models.survival(settings.survival_model) if age is not None else None
    result = segment_study(loaded, model=model, device=settings.device, progress=lambda f, m: report(0.9 * f, m),
                           engine=settings.engine, check_brain=settings.check_brain)
    if result.brain_check:
        raise BrainCheckFailed("Not segmented, as it does not look like skull-stripped brain MRI with each sequence "
                               "in its place: " + "; ".join(result.brain_check) + ". If it is, run again with "
                               "--skip-brain-check.", result.brain_check)
    warnings = list(result.warnings)
    record = {
        "schema_version": SCHEMA_VERSION, "id": study_id or out_dir.name, "study": str(study), "key": key,
        "modalities": list(loaded.modalities),
        "missing_modalities": [m for m in MODALITIES if m not in loaded.images], "study_notes": notes,
        "segmentation": {"file": SEGMENTATION_FILE, "model": result.model, "model_version": _model_version(result.model),
                         "device": result.device, "engine": result.engine,
                         "volumes_cm3": {k: round(v, 3) for k, v in result.volumes_cm3.items()},
                         "warnings": result.warnings, "brain_check": result.brain_check},
        "age": age, "features": None, "location": None, "survival": None,
    }

    report(0.9, "Measuring the tumour")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}{PARTIAL_TAG}", dir=out_dir.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it 0700; the study folder gets the usual permissions
        write_image_atomically(result.labels, staging / SEGMENTATION_FILE, model=result.model)
        tumour = result.volumes_cm3["WT"] > 0
        if age is not None and tumour:
            scored = _score(result.labels, age, survival_models, staging, out_dir)
            record["features"], record["location"] = scored["features"], scored["location"]
            warnings += scored["warnings"]
            record["survival"] = {
                "file": SURVIVAL_FILE, "plot": SURVIVAL_PLOT, "model": scored["model"]["name"],
                "variant": scored["model"]["variant"], "median_days": scored["median_survival"]["days"],
                "median_months": scored["median_survival"]["months"],
                "ci95_days": scored["median_survival"]["ci95_days"], "risk_group": scored["risk_group"],
                "risk_score": scored["risk_score"], "brats_class": scored["brats_class"],
                "sentence": scored["sentence"]}
        elif tumour:
            from ..survival.features import label_map_features

            features = label_map_features(result.labels)
            record["features"], record["location"] = _finite(features["shape"]), features["location"]
            warnings += features["warnings"]
        elif age is not None:
            record["survival"] = {"not_scored": "no tumour was found in this study, so there is nothing to score"}
        record["warnings"] = warnings
        record["elapsed_s"] = round(time.perf_counter() - start, 2)
        write_json_atomically(record, staging / RESULT_FILE)
        _move_into_place(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    report(1.0, "Study written")
    return {"gliomasuite_version": __version__, **record}


def _score(labels, age, survival_models, staging: Path, out_dir: Path) -> dict:
    """Survival of one patient, written as survival.json/png in ``staging`` naming the files' final place."""
    from ..outputs import write_json_atomically
    from ..survival.score import score_label_map, write_patient_result

    scored = score_label_map(labels, age, models=survival_models, source=out_dir / SEGMENTATION_FILE)
    write_patient_result(scored, staging)
    scored["plot"] = str(out_dir / SURVIVAL_PLOT)  # write_patient_result named the staging folder
    write_json_atomically(scored, staging / SURVIVAL_FILE)
    return scored


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Rename the finished staging folder to ``out_dir``, setting an earlier result aside first.

    Two attempts at one study can finish at once (a worker the scheduler thought dead was still
    running it): each renames its own complete folder in, and one of the two complete results stays.
    """
    for _ in range(5):
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}{OLD_TAG}{uuid.uuid4().hex[:8]}")
            try:
                out_dir.rename(old)
            except FileNotFoundError:  # the other attempt moved it meanwhile
                old = None
        try:
            staging.rename(out_dir)
        except OSError:
            if out_dir.exists():  # the other attempt's folder landed in between: set it aside in turn
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
                continue
            if old is not None:
                old.rename(out_dir)  # put the earlier result back
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return
    raise GliomaSuiteError(f"Could not move the finished study into {out_dir}: something else keeps writing there.")


def remove_leftovers(folder) -> List[Path]:
    """Delete the staging and set-aside folders a killed run left in ``folder``; return them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir()
             if p.is_dir() and p.name.startswith(".") and (PARTIAL_TAG in p.name or OLD_TAG in p.name)]
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    return found
