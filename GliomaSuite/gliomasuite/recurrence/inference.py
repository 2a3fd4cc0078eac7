"""P(recurrence) for the latest scan and a map of where tumour is expected at the next visit.

:func:`predict_recurrence` takes a patient's time points already registered to the baseline (images
and tumour label maps on the baseline's grid, with their dates), cuts the same 96 mm cube at 2 mm
around the tumour that the network was trained on, runs the recurrent U-Net and puts the map back on
the baseline's grid. It refuses a probability, with the reason, where a number would mislead: one
time point, unknown dates, intervals the model never saw, a failed registration, no T1ce at the
latest scan; the map needs only one time point with a T1ce.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import SimpleITK as sitk

from ..errors import GliomaSuiteError
from ..modalities import MODALITIES
from ..registry import DEFAULT_RECURRENCE_MODEL, MODELS_DIR, REGISTRY
from .inputs import MAX_INTERVAL_DAYS, series_inputs
from .simulate import CROP, GRID_MM

THRESHOLD = 0.5


@dataclass
class Visit:
    """One time point on the baseline's grid."""

    label: str
    images: Dict[str, sitk.Image]      # modality -> image (absent modalities left out)
    tumour: sitk.Image                 # tumour core mask (or BraTS labels: 1 and 4 are taken), any integer type
    day: Optional[float]               # days from the baseline; None when the date is unknown
    registration_failed: bool = False


@dataclass
class RecurrenceResult:
    probability: Optional[float]
    threshold: float
    called: Optional[bool]
    map: Optional[sitk.Image]          # P(tumour at the next visit) on the baseline's grid, float32
    model: str
    reasons: List[str] = field(default_factory=list)   # why there is no probability, when there is none
    notes: List[str] = field(default_factory=list)

    def sentence(self) -> str:
        if self.probability is None:
            return "No recurrence probability: " + "; ".join(self.reasons) + "."
        p = self.probability
        word = ("likely recurrence or progression" if p >= 0.8 else "possible recurrence or progression" if p >= THRESHOLD
                else "recurrence less likely than treatment effect or stable disease")
        return (f"P(recurrence) {p:.2f} at the latest scan ({word}; called {'recurrence' if self.called else 'no recurrence'}"
                f" at the {self.threshold:.1f} threshold). A model trained on simulated series only: see its card.")


def recurrence_entry(name: str = DEFAULT_RECURRENCE_MODEL) -> dict:
    registry = json.loads(REGISTRY.read_text()) if REGISTRY.exists() else {}
    models = registry.get("recurrence", {})
    if name not in models:
        raise GliomaSuiteError(f"No recurrence model named {name!r} is installed (known: "
                               f"{', '.join(sorted(models)) or 'none'}); reinstall GliomaSuite.")
    return models[name]


def load_recurrence_model(name: Optional[str] = None):
    """``(network, registry entry)`` of a registered recurrence model (checksum verified), by name (default: the
    shipped one), or of a recurrence weights file given by path (e.g. one ``train-recurrence`` wrote), whose
    entry then names only the file."""
    from .weights import load_recurrence_weights

    name = name or DEFAULT_RECURRENCE_MODEL
    registry = json.loads(REGISTRY.read_text()) if REGISTRY.exists() else {}
    if name not in registry.get("recurrence", {}) and Path(name).is_file():
        model, _ = load_recurrence_weights(name)
        model.name = str(name)
        return model, {"file": str(name)}
    entry = recurrence_entry(name)
    model, meta = load_recurrence_weights(MODELS_DIR / entry["file"], expected_sha256=entry["sha256"])
    model.name = name
    return model, entry


def _tumour_array(image: sitk.Image) -> np.ndarray:
    a = sitk.GetArrayFromImage(image)
    return np.isin(a, (1, 4)) if a.max() > 1 else a > 0


def crop_grid(reference: sitk.Image, visits: List[Visit], notes: List[str], masks: List[sitk.Image]) -> sitk.Image:
    """The 48^3, 2 mm cube centred on the tumour (``masks``, one per visit, all together), in the reference's
    orientation."""
    union = np.zeros(sitk.GetArrayViewFromImage(reference).shape, bool)
    for mask in masks:
        union |= sitk.GetArrayViewFromImage(mask) > 0
    if not union.any():
        for v in visits:
            union |= sitk.GetArrayFromImage(v.tumour) > 0
    if not union.any():
        any_image = next(iter(visits[-1].images.values()))
        union = sitk.GetArrayFromImage(any_image) > 0
        notes.append("No tumour is outlined at any time point: the map is centred on the brain, which says little.")
    zyx = np.argwhere(union).mean(axis=0)
    centre = np.array(reference.TransformContinuousIndexToPhysicalPoint([float(c) for c in zyx[::-1]]))
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    half = (CROP - 1) / 2 * GRID_MM
    origin = centre - direction @ np.full(3, half)
    grid = sitk.Image([CROP] * 3, sitk.sitkFloat32)
    grid.SetSpacing([GRID_MM] * 3)
    grid.SetDirection(reference.GetDirection())
    grid.SetOrigin(origin.tolist())
    return grid


def _around(image: sitk.Image, grid: sitk.Image) -> sitk.Image:
    """The part of ``image`` under the cube ``grid`` (with 4 voxels to spare for the smoothing): smoothing
    a whole 240x240x155 scan eight times cost seconds, the cube's neighbourhood a fraction of that."""
    corners = [grid.TransformIndexToPhysicalPoint([i * (s - 1) for i, s in zip(c, grid.GetSize())])
               for c in np.ndindex(2, 2, 2)]
    index = np.array([image.TransformPhysicalPointToContinuousIndex(p) for p in corners])
    low = np.maximum(np.floor(index.min(axis=0)).astype(int) - 4, 0)
    high = np.minimum(np.ceil(index.max(axis=0)).astype(int) + 4, np.array(image.GetSize()) - 1)
    if np.any(high < low):
        return image  # the cube is outside the image: resampling gives zeros either way
    return sitk.RegionOfInterest(image, [int(v) for v in high - low + 1], [int(v) for v in low])


def _on(grid: sitk.Image, image: sitk.Image, label: bool = False) -> np.ndarray:
    image = _around(image, grid)
    if label:
        mask = sitk.Cast(image, sitk.sitkFloat32)
        # Averaging the 1 mm mask over each 2 mm voxel (smoothing, then linear) keeps thin rims.
        mask = sitk.SmoothingRecursiveGaussian(mask, GRID_MM / 2)
        return sitk.GetArrayFromImage(sitk.Resample(mask, grid, sitk.Transform(), sitk.sitkLinear, 0.0)) >= 0.25
    smoothed = sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), GRID_MM / 2)
    return sitk.GetArrayFromImage(sitk.Resample(smoothed, grid, sitk.Transform(), sitk.sitkLinear, 0.0))


def predict_recurrence(visits: List[Visit], reference: sitk.Image, model=None,
                       name: str = DEFAULT_RECURRENCE_MODEL) -> RecurrenceResult:
    """See the module docstring; ``visits`` in date order from the baseline on, on ``reference``'s grid."""
    import torch

    reasons, notes = [], []
    if not visits:
        raise GliomaSuiteError("The recurrence model needs at least one time point.")
    usable = [v for v in visits if "t1ce" in v.images]
    if len(usable) < len(visits):
        skipped = [v.label for v in visits if "t1ce" not in v.images]
        notes.append(f"{', '.join(skipped)} had no T1ce and were left out of the recurrence model.")
    if not usable:
        return RecurrenceResult(None, THRESHOLD, None, None, name,
                                ["no time point has a T1ce, which the recurrence model needs"], notes)
    if "t1ce" not in visits[-1].images:
        reasons.append(f"the latest scan {visits[-1].label} has no T1ce")
    if len(usable) < 2:
        reasons.append("the call needs at least two time points from the baseline on (the map is from one)")
    days = [v.day for v in usable]
    if any(d is None for d in days):
        if len(usable) >= 2:
            reasons.append("the scan dates are unknown (give --dates), and the model weighs the time between scans")
        days = [0.0] * len(usable)  # the map is still drawn; no interval is judged
        gaps = np.zeros(0)
    else:
        gaps = np.diff(np.asarray(days, float))
    if np.any(gaps <= 0):
        reasons.append("two time points share a date or are out of order")
    elif np.any(gaps > MAX_INTERVAL_DAYS):
        reasons.append(f"scans {int(gaps.max())} days apart are further apart than the model was trained on "
                       f"(up to {int(MAX_INTERVAL_DAYS)})")
    failed = [v.label for v in usable if v.registration_failed]
    if failed:
        reasons.append(f"the registration of {', '.join(failed)} to the baseline looks failed")
    if model is None:
        model, _ = load_recurrence_model(name)
    masks = [_mask_image(v.tumour) for v in usable]
    grid = crop_grid(reference, usable, notes, masks)
    images = np.zeros((len(usable), len(MODALITIES), CROP, CROP, CROP), np.float32)
    available = np.zeros((len(usable), len(MODALITIES)), bool)
    mask_arrays = np.zeros((len(usable), CROP, CROP, CROP), np.uint8)
    for t, v in enumerate(usable):
        for i, m in enumerate(MODALITIES):
            if m in v.images:
                images[t, i] = _on(grid, v.images[m])
                available[t, i] = True
        mask_arrays[t] = _on(grid, masks[t], label=True)
    x = series_inputs(images, available, mask_arrays, np.asarray(days, float))
    with torch.no_grad():
        logits, rec = model(torch.from_numpy(x[None]))
    probability_map = torch.sigmoid(logits)[0, 0].numpy().astype(np.float32)
    crop = sitk.GetImageFromArray(probability_map)
    crop.CopyInformation(grid)
    full = sitk.Resample(crop, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    p = float(torch.sigmoid(rec)[0]) if not reasons else None
    return RecurrenceResult(p, THRESHOLD, (p >= THRESHOLD) if p is not None else None, full, name, reasons, notes)


def _mask_image(labels: sitk.Image) -> sitk.Image:
    """The tumour core (BraTS 1 and 4, or any non-zero value of a binary mask) as a 0/1 image."""
    mask = sitk.GetImageFromArray(_tumour_array(labels).astype(np.uint8))
    mask.CopyInformation(labels)
    return mask
