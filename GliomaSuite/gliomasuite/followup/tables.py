"""``followup.csv``: one row per time point and region, the volumes over time a spreadsheet can plot."""

import csv
import os
import tempfile
from pathlib import Path

from .. import __version__
from ..outputs import publish

COLUMNS = ("timepoint", "date", "days_from_baseline", "is_baseline", "segmented_by", "region", "volume_cm3",
           "change_from_baseline_percent", "change_from_nadir_percent", "sum_of_products_mm2", "enhancing_lesions",
           "response", "preliminary", "gliomasuite_version")


def followup_rows(result: dict):
    """The rows of ``followup.csv`` from a ``followup.json`` result."""
    responses = {r["label"]: r for r in result["responses"]}
    for tp in result["timepoints"]:
        response = responses.get(tp["label"])
        for region, volume in tp["volumes_cm3"].items():
            change = tp["volume_change"][region]
            yield {"timepoint": tp["label"], "date": tp["date"] or "", "days_from_baseline": _blank(tp["days_from_baseline"]),
                   "is_baseline": int(tp["is_baseline"]), "segmented_by": tp["segmented_by"], "region": region,
                   "volume_cm3": volume, "change_from_baseline_percent": _blank(change["from_baseline_percent"]),
                   "change_from_nadir_percent": _blank(change["from_nadir_percent"]),
                   "sum_of_products_mm2": tp["sum_of_products_mm2"], "enhancing_lesions": len(tp["lesions"]),
                   "response": response["category"] if response else "",
                   "preliminary": int(response["preliminary"]) if response else "",
                   "gliomasuite_version": __version__}


def write_followup_csv(result: dict, path) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".partial-", suffix=".csv", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(followup_rows(result))
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _blank(value):
    return "" if value is None else (round(value, 2) if isinstance(value, float) else value)
