"""The preprocessing every model shares, and its exact inverse.

A study arrives on the T1ce's grid in whatever orientation and spacing the scanner wrote. The
networks see one canonical space: LPS orientation (ITK's native one, and what BraTS data already
uses, so BraTS cases pass through without interpolation), 1 mm isotropic voxels, cropped to the
brain's bounding box, each modality z-scored over the brain. :func:`restore_labels` and
:func:`restore_probabilities` map a network output back onto the input's own grid, so a label map
overlays the T1ce the user loaded voxel for voxel.

Arrays are in SimpleITK/numpy order (z, y, x); the channel order is ``MODALITIES``.
"""

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from .modalities import MODALITIES

CANONICAL_ORIENTATION = "LPS"
TARGET_SPACING = (1.0, 1.0, 1.0)
#: Voxels of background kept around the brain's bounding box (so windows see the brain's edge).
CROP_MARGIN = 4
#: z-scores are clipped here: a few hot voxels (vessels, artefacts) should not dominate the input.
ZSCORE_CLIP = 6.0


@dataclass
class PreparedStudy:
    """A study in the networks' space, plus what is needed to map results back.

    ``array`` is float32 (4, z, y, x) in ``MODALITIES`` order; ``brain`` the boolean brain mask of the
    same crop. ``canonical`` is a 1 mm LPS image (uncropped, no pixel data of interest) carrying the
    canonical grid's geometry; ``crop`` the (z, y, x) slices of the crop inside that grid;
    ``reference`` the input's T1ce grid, where outputs land.
    """

    array: np.ndarray
    brain: np.ndarray
    canonical: sitk.Image
    crop: Tuple[slice, slice, slice]
    reference: sitk.Image

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(self.array.shape[1:])


def to_canonical(image: sitk.Image, interpolator=sitk.sitkLinear) -> sitk.Image:
    """Reorient to LPS and resample to 1 mm; ``image`` itself when it is already both (BraTS data is)."""
    direction = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
    oriented = image if direction == CANONICAL_ORIENTATION else sitk.DICOMOrient(image, CANONICAL_ORIENTATION)
    spacing = np.array(oriented.GetSpacing())
    if np.allclose(spacing, TARGET_SPACING, rtol=1e-3):
        return oriented
    size = np.maximum(np.round(np.array(oriented.GetSize()) * spacing / TARGET_SPACING), 1).astype(int)
    # Keep the physical centre of the first voxel's footprint: shift the origin by half the change
    # in voxel size so the field of view is preserved.
    offset = (np.array(TARGET_SPACING) - spacing) / 2.0
    origin = np.array(oriented.GetOrigin()) + np.array(oriented.GetDirection()).reshape(3, 3) @ offset
    return sitk.Resample(
        oriented, [int(s) for s in size], sitk.Transform(), interpolator, tuple(origin),
        TARGET_SPACING, oriented.GetDirection(), 0.0, oriented.GetPixelID(),
    )


def brain_bounding_box(mask: np.ndarray, margin: int = CROP_MARGIN) -> Tuple[slice, slice, slice]:
    """Slices of the mask's bounding box grown by ``margin`` voxels, clipped to the array."""
    coords = np.nonzero(mask)
    if coords[0].size == 0:
        return tuple(slice(0, n) for n in mask.shape)
    return tuple(
        slice(max(int(c.min()) - margin, 0), min(int(c.max()) + margin + 1, n))
        for c, n in zip(coords, mask.shape)
    )


def zscore_brain(array: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Per-channel z-score over brain voxels; background set to 0, values clipped to +-ZSCORE_CLIP.

    This is MONAI's ``NormalizeIntensity(nonzero=True, channel_wise=True)`` with an explicit
    mask, so all four channels share one brain mask even where one modality is dark.
    """
    out = np.zeros_like(array, dtype=np.float32)
    for c in range(array.shape[0]):
        values = array[c][brain]
        std = float(values.std()) if values.size else 0.0
        if std > 0:
            out[c][brain] = (values - values.mean()) / std
    np.clip(out, -ZSCORE_CLIP, ZSCORE_CLIP, out=out)
    return out


def prepare(images: Dict[str, sitk.Image], modalities: Sequence[str] = MODALITIES) -> PreparedStudy:
    """Bring a study (modality -> image, all on the T1ce grid) into the networks' space."""
    reference = images["t1ce"]
    # No copy beyond the one np.stack makes (a BraTS study, float32 LPS 1 mm already, is 140 MB).
    canonical = [to_canonical(images[m] if images[m].GetPixelID() == sitk.sitkFloat32
                              else sitk.Cast(images[m], sitk.sitkFloat32)) for m in modalities]
    stacked = np.stack([sitk.GetArrayViewFromImage(c) for c in canonical])
    # Skull-stripped input: the brain is where any modality has signal.
    brain_full = np.any(stacked > 0, axis=0)
    crop = brain_bounding_box(brain_full)
    array = stacked[(slice(None),) + crop]
    brain = brain_full[crop]
    geometry = sitk.Image(canonical[0].GetSize(), sitk.sitkUInt8)
    geometry.CopyInformation(canonical[0])
    return PreparedStudy(zscore_brain(array, brain), brain, geometry, crop, reference)


def label_to_prepared(label: sitk.Image, prepared: PreparedStudy) -> np.ndarray:
    """A label map on the study's grid (e.g. expert truth) in the prepared crop, nearest neighbour."""
    canonical = sitk.Resample(
        sitk.DICOMOrient(label, CANONICAL_ORIENTATION), prepared.canonical, sitk.Transform(),
        sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8,
    )
    return sitk.GetArrayFromImage(canonical)[prepared.crop].copy()


def _uncrop(array: np.ndarray, prepared: PreparedStudy, pixel_id) -> sitk.Image:
    full = np.zeros(array.shape[:-3] + tuple(reversed(prepared.canonical.GetSize())), dtype=array.dtype)
    full[(Ellipsis,) + prepared.crop] = array
    image = sitk.GetImageFromArray(full, isVector=False)
    image.CopyInformation(prepared.canonical)
    return sitk.Cast(image, pixel_id)


def restore_labels(labels: np.ndarray, prepared: PreparedStudy) -> sitk.Image:
    """A label map in the prepared crop back onto the input's T1ce grid (uint8, nearest neighbour)."""
    if labels.shape != prepared.shape:
        raise ValueError(f"label map shape {labels.shape} does not match the prepared crop {prepared.shape}")
    canonical = _uncrop(labels.astype(np.uint8), prepared, sitk.sitkUInt8)
    return sitk.Resample(canonical, prepared.reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def restore_probabilities(probabilities: np.ndarray, prepared: PreparedStudy) -> sitk.Image:
    """Per-region probabilities (C, z, y, x) in the crop back onto the input grid (vector float32)."""
    channels = [
        sitk.Resample(_uncrop(p.astype(np.float32), prepared, sitk.sitkFloat32), prepared.reference,
                      sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        for p in probabilities
    ]
    return sitk.Compose(channels)
