"""BraTS label conventions shared by every model, metric and exporter.

Label map values (BraTS): 0 background, 1 necrotic / non-enhancing core (NCR), 2 peritumoral
edema (ED), 4 enhancing tumour (ET). Evaluation regions: whole tumour WT = {1, 2, 4},
tumour core TC = {1, 4}, enhancing tumour ET = {4}.
"""

import numpy as np

BACKGROUND, NCR, ED, ET = 0, 1, 2, 4

#: Sub-region labels as (value, short name, display name, BraTS-style RGB colour in 0..1).
SUBREGIONS = (
    (NCR, "NCR", "Necrotic core", (1.0, 0.0, 0.0)),
    (ED, "ED", "Edema", (0.0, 1.0, 0.0)),
    (ET, "ET", "Enhancing tumour", (1.0, 1.0, 0.0)),
)

#: Standard codes (value, coding scheme, meaning) of each sub-region, as every output names them: the
#: segments of Slicer's segmentation node (their terminology) and of the DICOM SEG, and the SR's groups.
#: Necrosis and Edema from SNOMED CT, Enhancing Lesion from NCI Thesaurus; all in the category
#: Morphologically Abnormal Structure, anatomic region Brain.
SEGMENT_CODES = {
    "NCR": ("6574001", "SCT", "Necrosis"),
    "ED": ("79654002", "SCT", "Edema"),
    "ET": ("C113842", "NCIt", "Enhancing Lesion"),
}
CATEGORY_CODE = ("49755003", "SCT", "Morphologically Abnormal Structure")
ANATOMIC_REGION_CODE = ("12738006", "SCT", "Brain")

#: Evaluation regions as nested label sets, in the order the networks output them.
REGIONS = {"WT": (NCR, ED, ET), "TC": (NCR, ET), "ET": (ET,)}


def region_masks(labels: np.ndarray) -> dict:
    """Boolean masks for WT, TC and ET from a BraTS label map."""
    return {name: np.isin(labels, values) for name, values in REGIONS.items()}


def regions_to_labels(wt: np.ndarray, tc: np.ndarray, et: np.ndarray) -> np.ndarray:
    """Nested region masks to a BraTS label map (ET inside TC inside WT is enforced)."""
    labels = np.zeros(wt.shape, dtype=np.uint8)
    labels[wt] = ED
    labels[wt & tc] = NCR
    labels[wt & tc & et] = ET
    return labels


def volumes_cm3(labels: np.ndarray, spacing) -> dict:
    """NCR, ED, ET, TC and WT volumes in cm^3 of a BraTS label map with voxel ``spacing`` in mm."""
    voxel_cm3 = float(np.prod(spacing)) / 1000.0
    volumes = {short: int(np.count_nonzero(labels == value)) * voxel_cm3 for value, short, _, _ in SUBREGIONS}
    for region in ("TC", "WT"):
        volumes[region] = int(np.count_nonzero(np.isin(labels, REGIONS[region]))) * voxel_cm3
    return volumes
