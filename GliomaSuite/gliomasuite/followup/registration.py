"""Registration of a follow-up time point onto the baseline, and a check that it worked.

Response assessment compares the tumour at each time point with the baseline, voxel for voxel, so
every follow-up scan must first be brought onto the baseline's grid. Both scans are of one brain, so a
rigid transform (rotation and shift of the head in the scanner) is the right model; ``affine`` is
offered for scans whose voxel size was calibrated differently. Intensities differ between visits
(scanner, contrast timing), hence Mattes mutual information rather than intensity differences.

Registration can fail silently (a local optimum, or two different patients loaded as one), so every
result carries the correlation of the two scans and the overlap of their brain masks after
registration, and a warning in words when they are poor.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..errors import GliomaSuiteError

RIGID, AFFINE = "rigid", "affine"
KINDS = (RIGID, AFFINE)
#: The images are binned (averaged) to about this spacing before anything else: the optimiser then
#: runs at 4 and 2 mm (shrink factors below, relative to the binned images). Registering the 1 mm
#: images with the same 4 and 2 mm levels took 4.6-4.9 s a pair on 2 cores (ITK smooths and shrinks
#: the full images at each level) and a third level at 1 mm 9-10 s, for no gain: on the known 6-10 degree,
#: 8-10 mm motions of Testing/core/test_followup_registration.py binning gave 0.8-1.1 s and errors of
#: 0.03-0.10 mm and 0.01-0.03 degrees (1 mm images: 0.02-0.06 mm). Quality is measured on the binned
#: images too (same-patient correlation 0.87-0.97 there, different patients 0.29).
WORKING_SPACING_MM = 2.0
SHRINK_FACTORS = (2, 1)
SMOOTHING_SIGMAS_MM = (2.0, 1.0)
HISTOGRAM_BINS = 50
#: Fraction of the baseline brain's voxels the metric samples at each level; with a fixed seed the
#: same voxels every run, so a result can be reproduced.
SAMPLING_FRACTION = 0.10
SEED = 20240131
ITERATIONS = 200
#: The optimiser stops when its step is below this (in the units of SetOptimizerScalesFromPhysicalShift:
#: about the mm a voxel moves).
MIN_STEP = 1e-4

# Quality thresholds, from correlation and Dice after registration, inside the baseline brain, measured
# with this module's defaults:
#  - one patient's 1 mm BraTS T1ce against a copy of itself rotated 6-10 degrees about a tilted axis and
#    shifted 8-10 mm (3 cases; Testing/core/test_followup_registration.py prints the figures):
#    correlation 0.92-0.98, brain Dice 0.98 (the copy is interpolated once and loses a little brain
#    at the edge of the grid);
#  - real follow-ups of one patient, the post-chemoradiation T1ce against the T1ce at progression
#    (TCIA Brain-Tumor-Progression, 11 patients, not skull-stripped, so the "brain" is the head):
#    correlation 0.77-0.91, Dice 0.88-0.98 (0.59-0.79 and 0.90-1.00 as supplied, before registration);
#  - two different BraTS patients at 1 mm (7 pairs): correlation 0.15-0.41, Dice 0.39-0.91 (all BraTS
#    brains are resampled into the SRI24 atlas, so outlines overlap well although anatomy differs;
#    0.84-0.92 before registration, which drifts between two different brains).
# Correlation separates same and different patients with a margin of 0.17 or more either side of 0.60;
# Dice only catches gross misalignment. A scan after resection, or from another scanner, correlates less
# than these, hence a warning to look at the overlay, never a refusal.
#: Below this correlation inside the baseline brain the two scans may not be the same patient.
MIN_CORRELATION = 0.60
#: Below this Dice of the two brain masks the registration left the brains misaligned.
MIN_BRAIN_DICE = 0.80


@dataclass
class RegistrationResult:
    """A follow-up scan registered to the baseline.

    ``transform`` maps points of the baseline (fixed) image to the follow-up (moving) image, the ITK
    convention that :func:`resample_to_baseline` and Slicer's transform nodes expect.
    ``rotation_deg`` are the Euler angles (about x, y, z, ITK's Euler3DTransform order) of its rigid
    part and ``rotation_angle_deg`` the single angle of that rotation; ``translation_mm`` is how far it
    moves the centre of the baseline brain. ``correlation`` and ``brain_dice`` are measured inside the
    baseline brain after registration; ``warning`` is a sentence when they are poor, else None.
    """

    transform: sitk.Transform
    kind: str
    metric_value: float
    iterations: int
    correlation: float
    brain_dice: float
    rotation_deg: Tuple[float, float, float]
    rotation_angle_deg: float
    translation_mm: Tuple[float, float, float]
    warning: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        """Everything but the transform itself (saved by :func:`save_transform`), for JSON."""
        return {
            "kind": self.kind,
            "metric_value": self.metric_value,
            "iterations": self.iterations,
            "correlation": self.correlation,
            "brain_dice": self.brain_dice,
            "rotation_deg": list(self.rotation_deg),
            "rotation_angle_deg": self.rotation_angle_deg,
            "translation_mm": list(self.translation_mm),
            "warning": self.warning,
        }


_NO_OVERLAP = ("The follow-up scan and the baseline do not overlap once centred: check that both are brain scans "
               "of one patient with valid geometry (origin, spacing, direction) in their headers.")


def brain_mask(image: sitk.Image, name: str = "the image") -> sitk.Image:
    """The brain of a skull-stripped scan: voxels above zero, the largest connected piece, holes filled."""
    foreground = sitk.Cast(image, sitk.sitkFloat32) > 0
    pieces = sitk.RelabelComponent(sitk.ConnectedComponent(foreground), sortByObjectSize=True)
    largest = pieces == 1
    if not np.any(sitk.GetArrayViewFromImage(largest)):
        raise GliomaSuiteError(f"{name} is empty (no voxel above zero): choose the skull-stripped scan itself, "
                               "not a blank volume or a mask.")
    return sitk.BinaryFillhole(largest)


def register_to_baseline(fixed: sitk.Image, moving: sitk.Image, fixed_mask: Optional[sitk.Image] = None,
                         moving_mask: Optional[sitk.Image] = None, kind: str = RIGID,
                         shrink_factors: Sequence[int] = SHRINK_FACTORS,
                         smoothing_sigmas_mm: Sequence[float] = SMOOTHING_SIGMAS_MM,
                         iterations: int = ITERATIONS, seed: int = SEED) -> RegistrationResult:
    """Register ``moving`` (a follow-up scan) to ``fixed`` (the baseline), inside their brain masks.

    The masks default to :func:`brain_mask` of each image. ``kind`` is ``"rigid"`` (Euler3DTransform)
    or ``"affine"`` (a rigid stage, then AffineTransform from it).
    """
    if kind not in KINDS:
        raise GliomaSuiteError(f"Unknown registration kind {kind!r}: choose one of {', '.join(KINDS)}.")
    for image, name in ((fixed, "the baseline image"), (moving, "the follow-up image")):
        if image.GetDimension() != 3:
            raise GliomaSuiteError(f"{name} is {image.GetDimension()}D: choose a 3D MRI volume.")
    fixed_mask = None if fixed_mask is None else _checked_mask(fixed_mask, fixed, "the baseline image")
    moving_mask = None if moving_mask is None else _checked_mask(moving_mask, moving, "the follow-up image")
    fixed_f, fixed_mask = _working(sitk.Cast(fixed, sitk.sitkFloat32), fixed_mask)
    moving_f, moving_mask = _working(sitk.Cast(moving, sitk.sitkFloat32), moving_mask)
    fixed_mask = _checked_mask(fixed_mask, fixed_f, "the baseline image")
    moving_mask = _checked_mask(moving_mask, moving_f, "the follow-up image")

    # Centre of mass of each brain shape (not of intensity, which a bright tumour would pull).
    initial = sitk.CenteredTransformInitializer(
        sitk.Cast(fixed_mask, sitk.sitkFloat32), sitk.Cast(moving_mask, sitk.sitkFloat32),
        sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS)
    _check_overlap(fixed_mask, moving, moving_mask, initial)
    method = _method(fixed_mask, moving_mask, shrink_factors, smoothing_sigmas_mm, iterations, seed)
    rigid, total = _execute(method, initial, fixed_f, moving_f)
    transform = rigid
    if kind == AFFINE:
        affine = sitk.AffineTransform(3)
        affine.SetCenter(rigid.GetCenter())
        affine.SetMatrix(rigid.GetMatrix())
        affine.SetTranslation(rigid.GetTranslation())
        method = _method(fixed_mask, moving_mask, shrink_factors, smoothing_sigmas_mm, iterations, seed)
        transform, more = _execute(method, affine, fixed_f, moving_f)
        total += more

    correlation, dice = _quality(fixed_f, moving_f, fixed_mask, moving_mask, transform)
    angles, angle, shift = _rigid_part(transform)
    return RegistrationResult(transform=transform, kind=kind, metric_value=float(method.GetMetricValue()),
                              iterations=total, correlation=correlation, brain_dice=dice,
                              rotation_deg=angles, rotation_angle_deg=angle, translation_mm=shift,
                              warning=_warning(correlation, dice))


def _working(image: sitk.Image, mask: Optional[sitk.Image]) -> Tuple[sitk.Image, Optional[sitk.Image]]:
    """``image`` (and its mask) binned to about :data:`WORKING_SPACING_MM`; unchanged when already coarser."""
    factors = [max(1, int(round(WORKING_SPACING_MM / spacing))) for spacing in image.GetSpacing()]
    if all(f == 1 for f in factors):
        return image, mask
    small = sitk.BinShrink(image, factors)
    if mask is not None:  # a binned voxel is brain when most of it was
        mask = sitk.Cast(sitk.BinShrink(sitk.Cast(mask > 0, sitk.sitkFloat32), factors) > 0.5, sitk.sitkUInt8)
    return small, mask


def save_transform(result: RegistrationResult, path: Union[str, Path]) -> None:
    """Write the transform as an ITK ``.tfm`` file, which Slicer loads as a transform node."""
    sitk.WriteTransform(result.transform, str(path))


def resample_to_baseline(image: sitk.Image, baseline: sitk.Image, transform: sitk.Transform,
                         is_label: bool = False) -> sitk.Image:
    """``image`` (a follow-up scan or its label map) on the baseline's grid; outside it is 0.

    Label maps take the nearest label (interpolating would invent labels between codes).
    """
    interpolator = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    return sitk.Resample(image, baseline, transform, interpolator, 0, image.GetPixelID())


def _checked_mask(mask: Optional[sitk.Image], image: sitk.Image, name: str) -> sitk.Image:
    if mask is None:
        return brain_mask(image, name)
    mask = sitk.Cast(mask > 0, sitk.sitkUInt8)
    if not np.any(sitk.GetArrayViewFromImage(mask)):
        raise GliomaSuiteError(f"The brain mask of {name} is empty: give a mask that covers the brain, or none "
                               "to have it computed from the skull-stripped scan.")
    return mask


def _check_overlap(fixed_mask, moving, moving_mask, initial) -> None:
    """Refuse before optimising when, centred, no baseline brain voxel lands in the follow-up's brain.

    ITK would fail on it with errors about samples or histogram spacing that name neither cause.
    """
    domain = sitk.Image(moving.GetSize(), sitk.sitkUInt8) + 1
    domain.CopyInformation(moving)
    landed = (resample_to_baseline(moving_mask, fixed_mask, initial, True)
              * resample_to_baseline(domain, fixed_mask, initial, True) * fixed_mask)
    if not np.any(sitk.GetArrayViewFromImage(landed)):
        raise GliomaSuiteError(_NO_OVERLAP)


def _method(fixed_mask, moving_mask, shrink_factors, smoothing_sigmas_mm, iterations, seed):
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(SAMPLING_FRACTION, seed)
    method.SetMetricFixedMask(fixed_mask)
    method.SetMetricMovingMask(moving_mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=MIN_STEP,
                                                    numberOfIterations=iterations, relaxationFactor=0.5,
                                                    gradientMagnitudeTolerance=1e-8)
    # Scales from how far a parameter step moves the voxels: a radian and a mm then weigh alike.
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(shrink_factors))
    method.SetSmoothingSigmasPerLevel(list(smoothing_sigmas_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    # One thread: the metric's per-thread partial sums are added in whatever order the threads finish, so
    # with several the same input gave transforms differing by 1e-4 (and test_the_same_input_gives_the_same
    # _transform failed about one run in two). On the 2 mm working images one thread is fast enough. The
    # method's own setting is not enough (parts of the metric take ITK's global default, and with it at 2
    # repeated runs of one input still gave different transforms), so _execute also sets that to 1 while it runs.
    method.SetNumberOfThreads(1)
    return method


def _execute(method, initial, fixed, moving) -> Tuple[sitk.Transform, int]:
    """Run ``method`` from ``initial``; the optimised transform and the iterations of all levels."""
    method.SetInitialTransform(initial, inPlace=True)
    count = [0]
    method.AddCommand(sitk.sitkIterationEvent, lambda: count.__setitem__(0, count[0] + 1))
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # the same input, the same transform (see _method)
    try:
        method.Execute(fixed, moving)
    except RuntimeError as error:
        # "All samples map outside moving image buffer", when the optimiser walks the brains apart.
        if "samples" in str(error).lower():
            raise GliomaSuiteError(_NO_OVERLAP) from error
        raise
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    return initial, count[0]


def _quality(fixed, moving, fixed_mask, moving_mask, transform) -> Tuple[float, float]:
    """Pearson correlation inside the baseline brain, and Dice of the two brain masks, after registration."""
    inside = sitk.GetArrayFromImage(fixed_mask).astype(bool)
    moved = sitk.GetArrayFromImage(resample_to_baseline(moving, fixed, transform))[inside]
    moved_mask = sitk.GetArrayFromImage(resample_to_baseline(moving_mask, fixed_mask, transform, True)) > 0
    overlap = np.count_nonzero(moved_mask & inside)
    if overlap == 0:
        raise GliomaSuiteError("After registration the follow-up brain does not overlap the baseline brain: check "
                               "that both are brain scans of one patient with valid geometry in their headers.")
    dice = 2.0 * overlap / (np.count_nonzero(moved_mask) + np.count_nonzero(inside))
    base = sitk.GetArrayFromImage(fixed)[inside]
    spread = float(np.std(base)) * float(np.std(moved))
    correlation = float(np.mean((base - base.mean()) * (moved - moved.mean())) / spread) if spread > 0 else 0.0
    return correlation, float(dice)


def _rigid_part(transform) -> Tuple[Tuple[float, float, float], float, Tuple[float, float, float]]:
    """Euler angles (degrees), total rotation angle (degrees) and shift of the centre (mm)."""
    matrix = np.array(transform.GetMatrix()).reshape(3, 3)
    # The rotation closest to the matrix (polar decomposition); the matrix itself for a rigid transform.
    u, _, vt = np.linalg.svd(matrix)
    if np.linalg.det(u @ vt) < 0:  # a mirrored scan: take the rotation, not the reflection
        u[:, -1] *= -1
    rotation = u @ vt
    euler = sitk.Euler3DTransform()
    euler.SetMatrix(rotation.ravel().tolist(), 1e-6)
    angles = tuple(float(np.degrees(a)) for a in (euler.GetAngleX(), euler.GetAngleY(), euler.GetAngleZ()))
    angle = float(np.degrees(np.arccos(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))))
    # T(c) - c for the centre c is the transform's own translation (ITK: T(x) = M (x - c) + c + t).
    return angles, angle, tuple(float(t) for t in transform.GetTranslation())


def _warning(correlation: float, dice: float) -> Optional[str]:
    if correlation < MIN_CORRELATION:
        return (f"After registration the two scans correlate only {correlation:.2f} inside the baseline brain "
                f"(one patient's scans reach {MIN_CORRELATION:.2f} or more): the time points may not be the same "
                "patient, or the registration failed; check the overlay before reading the response.")
    if dice < MIN_BRAIN_DICE:
        return (f"After registration the two brain masks overlap with Dice {dice:.2f} (below {MIN_BRAIN_DICE:.2f}): "
                "the brains are misaligned; check the overlay, or give brain masks of both scans.")
    return None
