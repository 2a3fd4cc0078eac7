"""A cohort for ``gliomasuite batch``: which studies, with which IDs and ages, and where their results go.

A cohort is a folder whose sub-folders are the studies (each as ``gliomasuite segment`` takes it; the
ID is the folder's name), or a CSV manifest with a ``study`` column (a path, relative to the CSV's
folder or absolute), optionally ``id`` (default: the study folder's name) and ``age`` (years; another
column with ``--age-column``). Any other columns (time point, date, site, ...) are carried into the
cohort table unchanged.

Problems are sorted by when they are found. A duplicated ID is refused before any work: two studies
would share one output folder. A row whose study folder is missing, or whose age is not a number,
becomes an error row and the rest of the cohort runs.

The output folder holds ``cohort.json`` naming its cohort (the manifest or folder, and a checksum of
its IDs and study paths); a folder holding another cohort's results is refused unless ``--overwrite``.
"""

import csv
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import GliomaSuiteError
from ..modalities import IMAGE_SUFFIXES

COHORT_FILE = "cohort.json"
#: The studies that failed with a problem of their own, with their keys (not run again while unchanged).
ERRORS_FILE = "errors.json"
STUDIES_FOLDER = "studies"
#: Files of ours in an output folder, removed when ``--overwrite`` replaces another cohort's results.
OUTPUT_FILES = (COHORT_FILE, ERRORS_FILE, "cohort.csv", "cohort.parquet")
STUDY_COLUMN, ID_COLUMN = "study", "id"


@dataclass(frozen=True)
class CohortEntry:
    """One study of the cohort. ``problem`` (a sentence) makes it an error row without processing it."""

    id: str
    study: Path
    age: Optional[float] = None
    extra: Tuple[Tuple[str, str], ...] = ()
    problem: Optional[str] = None

    @property
    def folder(self) -> str:
        """The name of its output folder under ``OUT/studies``."""
        return folder_name(self.id)


@dataclass
class Cohort:
    source: Path                           # the manifest file or the cohort folder, absolute
    entries: List[CohortEntry]
    extra_columns: List[str] = field(default_factory=list)
    lines: List[int] = field(default_factory=list)  # each entry's line in the manifest (none for a folder)

    def checksum(self) -> str:
        """SHA-256 over the IDs and study paths, in order: what makes two cohorts the same one."""
        text = "".join(f"{e.id}\t{e.study}\n" for e in self.entries)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def has_ages(self) -> bool:
        return any(e.age is not None for e in self.entries)


def folder_name(study_id: str) -> str:
    """A file-system-safe folder name for an ID (never hidden: hidden names are staging folders)."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in study_id)
    return "_" + name[1:] if name.startswith(".") else name or "_"


def read_cohort(path, age_column: Optional[str] = None, exclude: Sequence[Path] = ()) -> Cohort:
    """Read a cohort folder or CSV manifest (see the module docstring); ``exclude``: folders that are not
    studies (the output folder, when it lies inside the cohort folder)."""
    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise GliomaSuiteError(f"The cohort {path} does not exist; give a folder of study folders or a CSV manifest.")
    if path.is_dir():
        cohort = _read_folder(path, exclude, age_column)
    elif path.suffix.lower() == ".csv":
        cohort = _read_manifest(path, age_column)
    else:
        raise GliomaSuiteError(f"The cohort {path} is neither a folder of study folders nor a CSV manifest (.csv).")
    if not cohort.entries:
        raise GliomaSuiteError(f"The cohort {path} lists no studies.")
    _check_ids(cohort, path)
    return cohort


def _read_folder(path: Path, exclude: Sequence[Path], age_column: Optional[str]) -> Cohort:
    if age_column:
        raise GliomaSuiteError("--age-column names a column of a CSV manifest; a cohort folder has no ages. Give a "
                               "manifest with study and age columns to score survival.")
    skip = {Path(p).absolute() for p in exclude}
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and p.absolute() not in skip)
    if not folders and any(p.name.lower().endswith(IMAGE_SUFFIXES) for p in path.iterdir()):
        raise GliomaSuiteError(f"{path} holds image files, not study folders: it looks like one study. Give the "
                               "folder that holds the study folders, or segment this one with gliomasuite segment.")
    return Cohort(path, [CohortEntry(p.name, p) for p in folders])


def _read_manifest(path: Path, age_column: Optional[str]) -> Cohort:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [h.strip() for h in next(reader, [])]
            rows, lines = [], []
            for row in reader:
                if any(v.strip() for v in row):  # blank lines are not studies
                    rows.append([v.strip() for v in row])
                    lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise GliomaSuiteError(f"The manifest {path} could not be read as a CSV file ({exc}).") from None
    if STUDY_COLUMN not in header:
        raise GliomaSuiteError(f"The manifest {path} has no '{STUDY_COLUMN}' column (its columns: "
                               f"{', '.join(header) or 'none'}); add one with each study's folder.")
    if age_column and age_column not in header:
        raise GliomaSuiteError(f"The manifest {path} has no '{age_column}' column (its columns: {', '.join(header)}); "
                               "name the age column with --age-column.")
    age_column = age_column or "age"
    known = {STUDY_COLUMN, ID_COLUMN, age_column}
    extra_columns = [h for h in header if h and h not in known]
    entries = [_manifest_entry(dict(zip(header, row)), path.parent, age_column, extra_columns) for row in rows]
    return Cohort(path, entries, extra_columns, lines)


def _manifest_entry(values: Dict[str, str], base: Path, age_column: str, extra_columns: List[str]) -> CohortEntry:
    from ..survival.cox import check_value

    extra = tuple((c, values.get(c, "")) for c in extra_columns)
    given = values.get(STUDY_COLUMN, "")
    study = Path(given).expanduser() if given else base
    if not study.is_absolute():
        study = (base / study).absolute()
    study_id = values.get(ID_COLUMN) or (study.name if given else "")
    problem = None
    if not given:
        problem = f"the manifest row of {study_id or 'this study'} has no study path in its '{STUDY_COLUMN}' column"
    elif not study.exists():
        problem = f"the study folder {study} does not exist (missing folder); check the manifest's path"
    age, text = None, values.get(age_column, "")
    if text:
        try:
            age = check_value("age", text, f"in the manifest's {age_column} column")
        except GliomaSuiteError as exc:
            problem = problem or str(exc)
    return CohortEntry(study_id or "(no id)", study, age, extra, problem)


def _check_ids(cohort: Cohort, path: Path) -> None:
    """Refuse two studies with one output folder (the same ID, or IDs differing only in case or in characters a
    folder name cannot hold)."""
    groups: Dict[str, List[int]] = {}
    for i, entry in enumerate(cohort.entries):
        groups.setdefault(entry.folder.casefold(), []).append(i)
    duplicated = [same for same in groups.values() if len(same) > 1]
    if not duplicated:
        return
    if cohort.lines:
        where = "; ".join(f"{cohort.entries[same[0]].id!r} on lines {', '.join(str(cohort.lines[i]) for i in same)}"
                          for same in duplicated[:5])
        raise GliomaSuiteError(f"The manifest {path} gives more than one study the same ID ({where}); each study "
                               "needs its own ID (its output folder), so nothing was run: fix the id column.")
    where = "; ".join(" and ".join(cohort.entries[i].id for i in same) for same in duplicated[:5])
    raise GliomaSuiteError(f"The study folders {where} in {path} differ only in letter case, so their results would "
                           "share one folder; rename one, or list them in a manifest with an id column.")


# ----------------------------------------------------------------------------------------------
# the output folder


def check_output(out, cohort: Cohort, overwrite: bool) -> str:
    """What writing ``cohort`` into ``out`` means: ``"new"``, ``"resume"`` (the same cohort's results are
    there) or ``"replace"`` (another cohort's, with ``--overwrite``); refused otherwise. Writes nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GliomaSuiteError(f"{out} is a file; give a folder for the cohort's results.")
    inside = next((e for e in cohort.entries if e.study.is_dir() and out.resolve().is_relative_to(e.study.resolve())),
                  None)
    if inside is not None:
        raise GliomaSuiteError(f"{out} lies inside the study folder {inside.study}, so the results would become "
                               "inputs of that study; choose an output folder outside every study.")
    record = out / COHORT_FILE
    if record.exists():
        try:
            old = json.loads(record.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("source") == str(cohort.source) or old.get("studies_sha256") == cohort.checksum():
            return "resume"
        if not overwrite:
            raise GliomaSuiteError(
                f"{out} holds the results of another cohort ({old.get('source', 'unknown')}, "
                f"{old.get('studies', '?')} studies); choose another output folder, or pass --overwrite to replace them.")
        return "replace"
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise GliomaSuiteError(f"{out} is not empty and holds no {COHORT_FILE}, so it is not a batch output; choose a "
                               "new or empty folder, or pass --overwrite to write the cohort's results into it.")
    return "new"


def claim_output(out, cohort: Cohort, action: str, note: Callable[[str], None] = lambda m: None) -> None:
    """Write ``cohort.json`` naming this cohort into ``out`` (after :func:`check_output`); ``"replace"``
    first removes the other cohort's study folders and tables."""
    from ..outputs import write_json_atomically

    out = Path(out)
    if action == "replace":
        note(f"Replacing the other cohort's results in {out} (--overwrite).")
        shutil.rmtree(out / STUDIES_FOLDER, ignore_errors=True)
        for name in OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
    write_json_atomically({"kind": "gliomasuite-batch-cohort", "source": str(cohort.source),
                           "studies_sha256": cohort.checksum(), "studies": len(cohort.entries)}, out / COHORT_FILE)
