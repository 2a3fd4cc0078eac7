"""A reader's label maps in the conventions they come in, turned into BraTS labels plus a cavity mask.

Follow-up label maps arrive in several conventions that share values but not meanings:

- ``brats2021``: 1 necrotic / non-enhancing core, 2 edema, 4 enhancing tumour (our own output);
- ``brats2023``: the same with enhancing tumour as 3;
- ``post-treatment`` (BraTS 2024 post-treatment glioma, the UCSF-ALPTDG data): 1 non-enhancing
  tumour core, 2 surrounding non-enhancing FLAIR hyperintensity, 3 enhancing tissue,
  4 **resection cavity**;
- ``binary``: one tumour mask drawn on the post-contrast T1 (TCIA Brain-Tumor-Progression), read as
  enhancing tumour.

A 4 means enhancing tumour in one and a resection cavity in another, and a post-treatment map without
enhancing tissue ({2, 4}) cannot be told from a BraTS 2021 map by its values. ``auto`` therefore
decides only where the values leave no doubt and otherwise refuses, asking for ``--labels``: calling a
cavity enhancing tumour would turn a surgical change into progression.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

import numpy as np

from .. import labels as L
from ..errors import GliomaSuiteError

CONVENTIONS = ("auto", "brats2021", "brats2023", "post-treatment", "binary")

#: value in the file -> BraTS 2021 label (0 keeps background; "cavity" is kept apart).
_MAPPINGS = {
    "brats2021": {1: L.NCR, 2: L.ED, 4: L.ET},
    "brats2023": {1: L.NCR, 2: L.ED, 3: L.ET},
    "post-treatment": {1: L.NCR, 2: L.ED, 3: L.ET, 4: "cavity"},
    "binary": {1: L.ET},
}


@dataclass
class ReaderLabels:
    """A reader's label map as BraTS labels (0/1/2/4) and a resection-cavity mask, same grid as the file."""

    labels: np.ndarray       # uint8, BraTS 2021 values
    cavity: np.ndarray       # bool
    convention: str          # the convention used (never "auto")
    note: str                # how the values were read, in words


def detect_convention(values) -> Tuple[str, str]:
    """The convention the label values imply, with the reason; refuses when they allow two readings."""
    present = {int(v) for v in values if int(v) != 0}
    if not present:
        return "brats2021", "the label map is empty (no tumour)"
    if present == {1}:
        return "binary", "a single-value mask, read as enhancing tumour (a mask drawn on the post-contrast T1)"
    if present <= {1, 2, 3}:
        return "brats2023", "values 1/2/3: 3 read as enhancing tumour (BraTS 2023)"
    if 3 in present and 4 in present:
        return "post-treatment", ("values 3 and 4 together: BraTS 2024 post-treatment labels, 3 enhancing tissue "
                                  "and 4 resection cavity")
    raise GliomaSuiteError(
        f"The label values {sorted(present)} can mean two things: in BraTS 2021 labels 4 is enhancing tumour, in "
        "BraTS 2024 post-treatment labels 4 is the resection cavity; say which with --labels brats2021 or --labels "
        "post-treatment.")


def to_brats(values: np.ndarray, convention: str = "auto", source: str = "the label map") -> ReaderLabels:
    """Read a label array in ``convention`` (see the module docstring) as :class:`ReaderLabels`."""
    if convention not in CONVENTIONS:
        raise GliomaSuiteError(f"Unknown label convention {convention!r}; use one of {', '.join(CONVENTIONS)}.")
    if np.issubdtype(values.dtype, np.floating):
        if not np.all(np.isfinite(values)) or not np.all(np.mod(values, 1) == 0):
            raise GliomaSuiteError(f"{source} has non-integer or non-finite values, so it is not a label map; give "
                                   "a label map with integer labels.")
    present = np.unique(values)
    if convention == "auto":
        convention, why = detect_convention(present)
    else:
        why = f"read as {convention} labels, as asked"
    mapping = _MAPPINGS[convention]
    unknown = sorted(int(v) for v in present if int(v) != 0 and int(v) not in mapping)
    if unknown:
        raise GliomaSuiteError(f"{source} has label value(s) {unknown} that {convention} labels do not use; check "
                               "--labels (brats2021: 1/2/4, brats2023: 1/2/3, post-treatment: 1/2/3/4, binary: 1).")
    labels = np.zeros(values.shape, dtype=np.uint8)
    cavity = np.zeros(values.shape, dtype=bool)
    for value, meaning in mapping.items():
        where = values == value
        if meaning == "cavity":
            cavity |= where
        else:
            labels[where] = meaning
    return ReaderLabels(labels, cavity, convention, why)


def joint_convention(paths) -> Tuple[str, str]:
    """One convention for all of a patient's label maps, decided from the values of all of them together
    (a 3 at one time point and a 4 at another settle the post-treatment reading for both)."""
    import SimpleITK as sitk

    from ..survival.features import read_label_map

    values = set()
    for path in paths:
        image = read_label_map(path)  # held: a view outlives no image (a freed one reads as zeros)
        values |= {int(v) for v in np.unique(sitk.GetArrayViewFromImage(image)) if float(v).is_integer()}
    return detect_convention(sorted(values))


def read_reader_labels(path, convention: str = "auto"):
    """A label-map file as ``(SimpleITK image with BraTS labels, ReaderLabels)``."""
    import SimpleITK as sitk

    from ..survival.features import read_label_map

    image = read_label_map(path)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise GliomaSuiteError(f"{path} is not a single 3D label map; give one label map per time point.")
    read = to_brats(sitk.GetArrayFromImage(image), convention, source=str(Path(path)))
    out = sitk.GetImageFromArray(read.labels)
    out.CopyInformation(image)
    return out, read
