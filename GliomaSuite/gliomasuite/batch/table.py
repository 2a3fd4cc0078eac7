"""The cohort table: one row per study, as ``cohort.csv`` and ``cohort.parquet``.

``status`` is ``ok`` (processed in this run), ``skipped`` (finished by an earlier run with the same
inputs and models; its row repeats that result), ``error`` (``error`` says why) or, in a table
written while the run is under way, ``pending``. ``qc_flags`` lists what to look at, separated by
``;``: ``brain_check`` (not brain MRI with each sequence in place: not segmented),
``missing_modalities`` (segmented without T1 or T2), ``no_tumour``, ``warnings`` (see the
``warnings`` column). Volumes are in cm3; the survival columns are filled when an age was given.
A manifest's other columns follow the result columns (renamed ``manifest_NAME`` where a name is
taken).

Both files are written to a temporary name and renamed into place, so a reader, or a run killed
while writing, never sees half a table. Parquet needs pyarrow (``pip install 'gliomasuite[batch]'``);
without it only the CSV is written.
"""

import csv
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from ..outputs import publish
from .cohort import STUDIES_FOLDER, CohortEntry

REGIONS = ("NCR", "ED", "ET", "TC", "WT")
#: Result columns and their types ("str" or "float"), in table order.
COLUMNS = (
    [("id", "str"), ("study", "str"), ("status", "str"), ("error", "str"), ("qc_flags", "str"),
     ("brain_check", "str"), ("missing_modalities", "str"), ("warnings", "str"), ("segmentation_model", "str"),
     ("segmentation_model_version", "str"), ("gliomasuite_version", "str"), ("device", "str"), ("engine", "str")]
    + [(f"{r}_cm3", "float") for r in REGIONS]
    + [("age", "float"), ("survival_model", "str"), ("survival_variant", "str"), ("median_survival_days", "float"),
       ("median_survival_months", "float"), ("risk_group", "str"), ("risk_score", "float"), ("brats_class", "str"),
       ("survival_note", "str"), ("elapsed_s", "float"), ("worker", "str"), ("output", "str")])
CSV_NAME, PARQUET_NAME = "cohort.csv", "cohort.parquet"


def _base(entry: CohortEntry, status: str) -> dict:
    return {"id": entry.id, "study": str(entry.study), "status": status, "age": entry.age}


def pending_row(entry: CohortEntry) -> dict:
    return _base(entry, "pending")


def error_row(entry: CohortEntry, message: str, brain_check: Sequence[str] = (), elapsed: Optional[float] = None,
              worker: str = "") -> dict:
    row = _base(entry, "error")
    row.update(error=message, elapsed_s=elapsed, worker=worker, brain_check="; ".join(brain_check),
               qc_flags="brain_check" if brain_check else "")
    return row


def result_row(entry: CohortEntry, result: Mapping, status: str, elapsed: Optional[float] = None,
               worker: str = "") -> dict:
    """A study's row from its ``result.json`` (see :func:`gliomasuite.batch.study.process_study`)."""
    seg = result.get("segmentation") or {}
    volumes = seg.get("volumes_cm3") or {}
    warnings = result.get("warnings") or []
    missing = result.get("missing_modalities") or []
    flags = [flag for flag, present in (("brain_check", seg.get("brain_check")), ("missing_modalities", missing),
                                        ("no_tumour", volumes.get("WT") == 0), ("warnings", warnings)) if present]
    row = _base(entry, status)
    row.update({
        "qc_flags": ";".join(flags), "brain_check": "; ".join(seg.get("brain_check") or []),
        "missing_modalities": " ".join(missing), "warnings": " | ".join(warnings),
        "segmentation_model": seg.get("model"), "segmentation_model_version": seg.get("model_version"),
        "gliomasuite_version": result.get("gliomasuite_version"), "device": seg.get("device"),
        "engine": seg.get("engine"), "elapsed_s": elapsed, "worker": worker,
        "output": f"{STUDIES_FOLDER}/{entry.folder}",
        **{f"{r}_cm3": volumes.get(r) for r in REGIONS}})
    survival = result.get("survival") or {}
    if "not_scored" in survival:
        row["survival_note"] = survival["not_scored"]
    elif survival:
        row.update(survival_model=survival.get("model"), survival_variant=survival.get("variant"),
                   median_survival_days=survival.get("median_days"), median_survival_months=survival.get("median_months"),
                   risk_group=survival.get("risk_group"), risk_score=survival.get("risk_score"),
                   brats_class=survival.get("brats_class"))
    return row


class CohortTable:
    """The rows of one run, in the cohort's order, with the manifest's own columns after the result columns."""

    def __init__(self, entries: Sequence[CohortEntry], extra_columns: Sequence[str] = ()):
        taken = {name for name, _ in COLUMNS}
        self.extra = {c: (f"manifest_{c}" if c in taken else c) for c in extra_columns}
        self.columns = COLUMNS + [(name, "str") for name in self.extra.values()]
        self.entries = list(entries)
        self.rows: Dict[str, dict] = {e.id: pending_row(e) for e in self.entries}

    def set(self, entry: CohortEntry, row: dict) -> None:
        row = dict(row)
        for column, value in entry.extra:
            row[self.extra[column]] = value
        self.rows[entry.id] = row

    def counts(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for row in self.rows.values():
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        return counts

    def records(self) -> List[dict]:
        return [self.rows[e.id] for e in self.entries]

    def write_csv(self, folder) -> Path:
        path = Path(folder) / CSV_NAME
        tmp = _temporary(path)
        try:
            with open(tmp, "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow([name for name, _ in self.columns])
                for row in self.records():
                    writer.writerow(["" if row.get(name) is None else row.get(name) for name, _ in self.columns])
            publish(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path

    @staticmethod
    def preload_parquet() -> None:
        """Import pyarrow and what its Parquet writer pulls in (pandas), so that the table's last write
        does not wait for those imports; run in a thread while the workers segment and the driver waits."""
        try:
            import pyarrow as pa
            import pyarrow.parquet  # noqa: F401
            pa.array([0.0]).to_pandas()  # the writer's pandas metadata imports pandas
        except ImportError:
            pass

    def write_parquet(self, folder) -> Optional[Path]:
        """``cohort.parquet``, or None when pyarrow is not installed."""
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            return None
        path = Path(folder) / PARQUET_NAME
        records = self.records()
        arrays = {}
        for name, kind in self.columns:
            values = [row.get(name) for row in records]
            if kind == "float":
                arrays[name] = pa.array([None if v is None else float(v) for v in values], pa.float64())
            else:
                arrays[name] = pa.array([None if v is None else str(v) for v in values], pa.string())
        tmp = _temporary(path)
        try:
            pq.write_table(pa.table(arrays), tmp)
            publish(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path


def _temporary(path: Path) -> str:
    fd, tmp = tempfile.mkstemp(prefix=".partial-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    return tmp
