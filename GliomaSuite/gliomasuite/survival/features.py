"""Tumour shape features from a BraTS label map, with the definitions of the cohort table.

The default survival model is fitted on ``survival/brats2020_gt_shape_survival.csv`` (236 BraTS 2020
patients, features computed from the expert label maps). A patient is only scored correctly if his
or her features are computed exactly as that table's were, so this module reproduces its columns:
on the 11 BraTS 2018 label maps in the shared data that are also in the table, every shape column
agrees to float32 precision (``Testing/core/test_survival.py`` checks two of them).

Per region ``R`` in WT = {1, 2, 4}, TC = {1, 4}, ET = {4}, NCR = {1}, ED = {2}:

* ``R_voxels``: number of voxels; ``R_vol_mm3`` = voxels x voxel volume.
* ``R_surf_mm2``: area of the marching-cubes mesh of the region's mask (level 0.5, honouring the
  voxel spacing; the mask is padded by one voxel so a region touching the image edge is closed),
  ``skimage.measure.marching_cubes`` + ``mesh_surface_area``.
* ``R_sphericity`` = (36 pi V^2)^(1/3) / A (1 for a perfect sphere, the usual radiomics
  definition); ``R_compactness`` = sphericity^3 = 36 pi V^2 / A^3.
* ``R_elongation`` = sqrt(l2 / l1) and ``R_flatness`` = sqrt(l3 / l1), where l1 >= l2 >= l3 are the
  eigenvalues of the covariance of the region's voxel coordinates in millimetres (pyradiomics'
  convention: both in (0, 1], 1 = round, small = elongated / flat).

An empty region has voxels = volume = surface = 0 and no shape: sphericity, compactness, elongation
and flatness are NaN (never 0, which would be a real and misleading value). A region of one voxel,
or of voxels on a line or in a plane, has NaN elongation or flatness where the ratio is undefined.

Location: :func:`hemisphere` gives the side of the whole tumour's centroid from the image's
physical (LPS) coordinates. Lobe and distance to the ventricles need an atlas registration this
package does not do yet, so they are not reported rather than guessed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np

from ..errors import GliomaSuiteError
from ..labels import ED, ET, NCR

#: Regions of the cohort table, as label sets of a BraTS label map.
FEATURE_REGIONS = {"WT": (NCR, ED, ET), "TC": (NCR, ET), "ET": (ET,), "NCR": (NCR,), "ED": (ED,)}

#: Shape columns per region, in the table's order (column name = f"{region}_{name}").
SHAPE_NAMES = ("voxels", "vol_mm3", "surf_mm2", "compactness", "sphericity", "elongation", "flatness")

#: Label values a BraTS label map may contain.
ALLOWED_LABELS = (0, NCR, ED, ET)


def feature_columns() -> list:
    """The shape columns in the cohort table's order: WT_voxels, WT_vol_mm3, ..., ED_flatness."""
    return [f"{region}_{name}" for region in FEATURE_REGIONS for name in SHAPE_NAMES]


def surface_area_mm2(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Marching-cubes surface area (mm^2) of a boolean mask; ``spacing`` in the array's axis order."""
    from skimage import measure

    if not mask.any():
        return 0.0
    # Crop to the bounding box (plus the padding) for speed; the mesh is the same.
    index = np.nonzero(mask)
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in index)
    padded = np.pad(mask[box], 1).astype(np.float32)
    verts, faces, _, _ = measure.marching_cubes(padded, level=0.5, spacing=tuple(float(s) for s in spacing))
    return float(measure.mesh_surface_area(verts, faces))


def pca_shape(mask: np.ndarray, spacing: Sequence[float]) -> tuple:
    """(elongation, flatness) = (sqrt(l2/l1), sqrt(l3/l1)) of the voxel coordinates in mm."""
    coords = np.argwhere(mask).astype(np.float64) * np.asarray(spacing, dtype=np.float64)
    if len(coords) < 2:
        return math.nan, math.nan
    coords -= coords.mean(axis=0)
    eigen = np.sort(np.linalg.eigvalsh(np.cov(coords.T)))[::-1]
    eigen = np.clip(eigen, 0.0, None)
    if eigen[0] <= 0:
        return math.nan, math.nan
    return float(math.sqrt(eigen[1] / eigen[0])), float(math.sqrt(eigen[2] / eigen[0]))


def region_shape(mask: np.ndarray, spacing: Sequence[float]) -> Dict[str, float]:
    """The seven shape numbers of one region (see the module docstring for the definitions)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise GliomaSuiteError(f"A 3D label map is needed for shape features; this one has {mask.ndim} dimensions.")
    voxels = int(mask.sum())
    volume = voxels * float(np.prod(np.asarray(spacing, dtype=np.float64)))
    if voxels == 0:
        return {"voxels": 0, "vol_mm3": 0.0, "surf_mm2": 0.0, "compactness": math.nan,
                "sphericity": math.nan, "elongation": math.nan, "flatness": math.nan}
    area = surface_area_mm2(mask, spacing)
    sphericity = (36.0 * math.pi * volume ** 2) ** (1.0 / 3.0) / area if area > 0 else math.nan
    elongation, flatness = pca_shape(mask, spacing)
    return {"voxels": voxels, "vol_mm3": volume, "surf_mm2": area, "compactness": sphericity ** 3,
            "sphericity": sphericity, "elongation": elongation, "flatness": flatness}


def check_labels(labels: np.ndarray, source: str = "the label map") -> None:
    """Refuse label values other than BraTS's 0, 1, 2, 4 (e.g. BraTS 2023's 3 for enhancing tumour)."""
    present = set(int(v) for v in np.unique(labels))
    unknown = sorted(present - set(ALLOWED_LABELS))
    if unknown:
        hint = (" (BraTS 2023 label maps use 3 for enhancing tumour: relabel 3 to 4 first)"
                if unknown == [3] else "")
        raise GliomaSuiteError(
            f"{source} has label value(s) {', '.join(map(str, unknown))}, but a BraTS label map has only "
            f"0 background, 1 necrotic core, 2 edema and 4 enhancing tumour{hint}.")


def shape_features(labels: np.ndarray, spacing: Sequence[float], source: str = "the label map",
                   require_tumour: bool = True) -> Dict[str, float]:
    """All shape columns of the cohort table (``WT_voxels`` ... ``ED_flatness``) for one label map.

    ``spacing`` is the voxel size in mm in the array's axis order (``image.GetSpacing()[::-1]`` for
    an array from ``SimpleITK.GetArrayFromImage``). An empty whole tumour raises
    :class:`GliomaSuiteError` unless ``require_tumour`` is False.
    """
    labels = np.asarray(labels)
    check_labels(labels, source)
    if len(spacing) != labels.ndim:
        raise GliomaSuiteError(f"The voxel spacing {tuple(spacing)} does not match the {labels.ndim}D label map.")
    if require_tumour and not np.isin(labels, FEATURE_REGIONS["WT"]).any():
        raise GliomaSuiteError(
            f"{source} contains no tumour (no voxel labelled 1, 2 or 4), so there is nothing to measure; "
            "check that the right segmentation was given, or segment the study first.")
    out = {}
    for region, values in FEATURE_REGIONS.items():
        for name, value in region_shape(np.isin(labels, values), spacing).items():
            out[f"{region}_{name}"] = value
    return out


def hemisphere(image, labels: Optional[np.ndarray] = None, brain_mask: Optional[np.ndarray] = None,
               midline_margin_mm: float = 5.0) -> dict:
    """Side of the whole tumour's centroid, from a SimpleITK label image in physical coordinates.

    The midline is the centre of ``brain_mask``'s extent along the patient's left-right axis when a
    brain mask (same grid) is given, else the centre of the image's extent, which is the midline
    for images in an atlas space such as BraTS's SRI24 (``basis`` says which was used). A centroid
    within ``midline_margin_mm`` of it is reported as "midline". ``left_fraction`` is the share of
    whole-tumour voxels on the patient's left.
    """
    import SimpleITK as sitk

    if labels is None:
        labels = sitk.GetArrayFromImage(image)
    wt = np.isin(labels, FEATURE_REGIONS["WT"])
    if not wt.any():
        raise GliomaSuiteError("The label map contains no tumour, so it has no hemisphere.")
    # Physical LPS coordinate of every tumour voxel along x (patient's right -> left).
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)

    def lps_x(zyx_indices: np.ndarray) -> np.ndarray:
        ijk = zyx_indices[:, ::-1].astype(np.float64)  # numpy (z, y, x) -> ITK (i, j, k)
        return origin[0] + (ijk * spacing) @ direction[0]

    tumour_x = lps_x(np.argwhere(wt))
    if brain_mask is not None and np.asarray(brain_mask).any():
        brain_x = lps_x(np.argwhere(np.asarray(brain_mask, dtype=bool)))
        midline, basis = 0.5 * (brain_x.min() + brain_x.max()), "centre of the brain mask"
    else:
        corners = np.array([[z, y, x] for z in (0, labels.shape[0] - 1) for y in (0, labels.shape[1] - 1)
                            for x in (0, labels.shape[2] - 1)])
        corner_x = lps_x(corners)
        midline, basis = 0.5 * (corner_x.min() + corner_x.max()), "centre of the image (atlas-space images)"
    offset = float(tumour_x.mean() - midline)  # LPS: +x is the patient's left
    side = "midline" if abs(offset) < midline_margin_mm else ("left" if offset > 0 else "right")
    return {"hemisphere": side, "centroid_offset_mm": round(offset, 1),
            "left_fraction": round(float((tumour_x > midline).mean()), 3), "basis": basis}


def read_label_map(path):
    """A label-map file as a SimpleITK image, or a :class:`GliomaSuiteError` naming the problem."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise GliomaSuiteError(f"The label map {path} does not exist; check the path.")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise GliomaSuiteError(f"{path} could not be read as an image (damaged, or not NIfTI, NRRD or MetaImage); "
                               "give a label map in one of those formats.") from None


def label_map_features(path_or_image: Union[str, Path, object], brain_mask: Optional[np.ndarray] = None) -> dict:
    """Shape features plus location of one label-map file (or SimpleITK image).

    Returns ``{"shape": {...table columns...}, "location": {...}, "spacing_mm": [...], "warnings": [...]}``;
    a warning says when the grid is not 1 mm isotropic (the cohort's), where sphericity is biased low.
    """
    import SimpleITK as sitk

    if isinstance(path_or_image, (str, Path)):
        image, source = read_label_map(path_or_image), str(path_or_image)
    else:
        image, source = path_or_image, "the label map"
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise GliomaSuiteError(f"{source} is not a single 3D label map.")
    labels = sitk.GetArrayFromImage(image)
    if np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise GliomaSuiteError(f"{source} has non-integer values: give a label map, not a probability map.")
        labels = labels.astype(np.int32)
    spacing = image.GetSpacing()[::-1]
    shape = shape_features(labels, spacing, source=source)
    warnings = []
    if not np.allclose(spacing, 1.0, atol=0.05):
        warnings.append(
            f"{source} has {' x '.join(f'{s:g}' for s in image.GetSpacing())} mm voxels; the cohort's features were "
            "measured on 1 mm isotropic label maps, and surface-based features (sphericity) come out lower on "
            "coarser or thicker voxels, so the estimate may be biased.")
    return {"shape": shape, "location": hemisphere(image, labels, brain_mask),
            "spacing_mm": [float(s) for s in image.GetSpacing()], "warnings": warnings}
