"""Real tumour-free brains, made from labelled glioma cases whose tumour stays in one hemisphere.

No tumour-free multimodal brain MRI ships with GliomaSuite's data, and synthetic ones (the demo's
template brains) look unlike real scans to a network. A labelled BraTS case whose whole tumour
(edema included) lies on one side of the mid-sagittal plane has a real, expert-checked tumour-free
hemisphere; reflecting it across that plane gives a whole brain with no tumour, in all four
contrasts, with the scanner's own noise, bias and contrast. These serve two purposes: a test that
a tumour-free brain gives an empty or near-empty map (on cases the model never trained on), and
negative training examples (on training cases only).

The plane is found from the brain mask alone (the tumour cannot bias it): the x position, in half
voxels, whose reflection best overlaps the mask with itself. BraTS images are registered to the
SRI24 atlas, so the plane is close to x = const; a case whose mask is clearly asymmetric (a
reflection overlap below :data:`MIN_SYMMETRY`) is refused rather than mirrored badly.

What a mirrored brain is not: it is perfectly symmetric, and the kept hemisphere may be compressed
by the tumour's mass effect. It shows what the network does on tumour-free tissue, not on every
tumour-free brain.
"""

from pathlib import Path
from typing import Dict, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..errors import GliomaSuiteError
from ..modalities import MODALITIES
from ..study import find_segmentation, load_study

#: Voxels of tumour-free margin required between the tumour and the mid-sagittal plane.
MIN_MARGIN = 4
#: Dice of the brain mask with its own reflection below which no plane is trusted.
MIN_SYMMETRY = 0.85


def midline(brain: np.ndarray, search: int = 10) -> Tuple[float, float]:
    """The mid-sagittal plane ``x = m`` (array order z, y, x; m in half voxels) and its symmetry Dice."""
    xs = np.nonzero(brain.any(axis=(0, 1)))[0]
    if xs.size == 0:
        raise GliomaSuiteError("No brain signal: cannot find a mid-sagittal plane.")
    centre = (xs.min() + xs.max()) / 2.0
    best = (-1.0, centre)
    for twice_m in range(int(2 * centre) - 2 * search, int(2 * centre) + 2 * search + 1):
        mirrored = _reflect(brain, twice_m)
        overlap = 2.0 * np.logical_and(brain, mirrored).sum() / (brain.sum() + mirrored.sum())
        if overlap > best[0]:
            best = (overlap, twice_m / 2.0)
    return best[1], best[0]


def _reflect(array: np.ndarray, twice_m: int) -> np.ndarray:
    """``array`` reflected across x = twice_m / 2 along its last axis; what falls outside is 0."""
    n = array.shape[-1]
    source = twice_m - np.arange(n)
    valid = (source >= 0) & (source < n)
    out = np.zeros_like(array)
    out[..., valid] = array[..., source[valid]]
    return out


def mirror_healthy_hemisphere(case_folder: Union[str, Path]) -> Tuple[Dict[str, sitk.Image], sitk.Image, dict]:
    """Images (modality -> image) of a tumour-free brain from a labelled case, its all-zero label map
    and a description (plane, kept side, symmetry, margin).

    Raises :class:`GliomaSuiteError` when the case has no label map, its tumour crosses the plane
    (or comes within :data:`MIN_MARGIN` voxels of it) or its brain is not symmetric enough.
    """
    folder = Path(case_folder)
    seg_path = find_segmentation(folder)
    if seg_path is None:
        raise GliomaSuiteError(f"{folder.name}: no label map, so no way to know which hemisphere is free.")
    images = load_study(folder).images
    arrays = {m: sitk.GetArrayFromImage(images[m]) for m in MODALITIES}
    brain = np.any(np.stack([a > 0 for a in arrays.values()]), axis=0)
    m, symmetry = midline(brain)
    if symmetry < MIN_SYMMETRY:
        raise GliomaSuiteError(f"{folder.name}: brain mask not symmetric enough to mirror "
                               f"(reflection overlap {symmetry:.2f} < {MIN_SYMMETRY}).")
    tumour_x = np.nonzero((sitk.GetArrayFromImage(sitk.ReadImage(str(seg_path))) > 0).any(axis=(0, 1)))[0]
    if tumour_x.size == 0:
        raise GliomaSuiteError(f"{folder.name}: the label map is empty; nothing to mirror away.")
    if tumour_x.min() > m + MIN_MARGIN:
        keep_low, margin = True, tumour_x.min() - m
    elif tumour_x.max() < m - MIN_MARGIN:
        keep_low, margin = False, m - tumour_x.max()
    else:
        raise GliomaSuiteError(f"{folder.name}: the tumour (x {tumour_x.min()}-{tumour_x.max()}) reaches the "
                               f"mid-sagittal plane x = {m:g}; no hemisphere is tumour-free.")
    x = np.arange(brain.shape[-1])
    # The kept hemisphere, and the plane itself when it falls on a voxel.
    kept = x <= m if keep_low else x >= m
    out = {}
    for name, array in arrays.items():
        mirrored = np.where(kept, array, _reflect(array, int(round(2 * m))))
        image = sitk.GetImageFromArray(mirrored.astype(array.dtype))
        image.CopyInformation(images[name])
        out[name] = image
    labels = sitk.Image(images["t1ce"].GetSize(), sitk.sitkUInt8)
    labels.CopyInformation(images["t1ce"])
    info = {"case": folder.name, "plane_x": m, "symmetry": round(float(symmetry), 4),
            "kept": "low x" if keep_low else "high x", "margin_voxels": float(margin)}
    return out, labels, info


def write_mirrored_case(case_folder: Union[str, Path], out_root: Union[str, Path], prefix: str = "Mirrored") -> Path:
    """Write :func:`mirror_healthy_hemisphere`'s brain as a BraTS-named case ``<prefix>_<case>``."""
    images, labels, _ = mirror_healthy_hemisphere(case_folder)
    name = f"{prefix}_{Path(case_folder).name}"
    folder = Path(out_root) / name
    folder.mkdir(parents=True, exist_ok=True)
    for modality, image in images.items():
        sitk.WriteImage(image, str(folder / f"{name}_{modality}.nii.gz"), useCompression=True)
    sitk.WriteImage(labels, str(folder / f"{name}_seg.nii.gz"), useCompression=True)
    return folder
