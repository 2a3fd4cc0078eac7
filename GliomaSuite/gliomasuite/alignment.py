"""Are a study's sequences what they claim and aligned with each other? And aligning them when they are not.

Two checks that run before the network (``segment_study``), on the images as loaded (all on the T1ce
grid):

* **Not an MR image**: a sequence with a handful of distinct values inside its foreground is a label
  map or a mask given in place of a scan (e.g. a segmentation chosen as the T1ce); it is refused like
  a failed brain check (the user can still go on with ``--skip-brain-check``).
* **Misregistered, or another patient's**: in skull-stripped data every sequence carries the same brain
  outline, so a sequence whose outline is offset from the T1ce's (centroid distance) or overlaps it
  poorly (Dice) was not co-registered, or belongs to someone else (two BraTS patients' outlines, both in
  the SRI24 atlas space, overlap by 0.81-0.91: ``tools/brain_check_report.py --other-patient``). A warning names the sequence, the offset and the fix, ``--coregister``,
  which aligns each sequence rigidly to the T1ce with the follow-up's registration (SimpleITK, Mattes
  mutual information inside the brain) before segmenting.

Thresholds measured on the real cases (``tools/brain_check_report.py``, and
``Testing/core/test_alignment.py`` asserts every real study passes).
"""

from typing import Callable, Dict, List, Tuple

import numpy as np
import SimpleITK as sitk

from .modalities import MODALITIES, display_name

#: At most this many distinct values inside its foreground: a label map or mask, not an MR image.
MAX_LABEL_VALUES = 12
#: A sequence whose brain outline's centre lies further than this from the T1ce's is misregistered (mm).
MISREGISTERED_MM = 2.0
#: ... or whose brain outline overlaps the T1ce's less than this (Dice).
MIN_OUTLINE_DICE = 0.95


def not_mr_images(images: Dict[str, sitk.Image]) -> List[str]:
    """Sequences that hold a label map or a mask rather than MR intensities, in words."""
    problems = []
    for modality, image in images.items():
        values = sitk.GetArrayViewFromImage(image)
        inside = values[values > 0]
        if inside.size == 0:
            continue
        distinct = np.unique(inside[:: max(1, inside.size // 200000)])
        if len(distinct) <= MAX_LABEL_VALUES and np.all(distinct == np.round(distinct)):
            shown = ", ".join(f"{v:g}" for v in distinct[:6]) + (", ..." if len(distinct) > 6 else "")
            problems.append(f"{display_name(modality)} holds only {len(distinct)} distinct values ({shown}) inside "
                            "its foreground: a label map or mask, not an MR image; choose the scan itself")
    return problems


def outline_offsets(images: Dict[str, sitk.Image], reference: str = "t1ce") -> Dict[str, Tuple[float, float]]:
    """For each sequence but ``reference``: (distance in mm between the centres of their brain outlines,
    Dice of the outlines). The images must share one grid (as :func:`gliomasuite.study.load_study` gives)."""
    if reference not in images:
        return {}
    ref = sitk.GetArrayViewFromImage(images[reference]) > 0
    if not ref.any():
        return {}
    spacing = np.array(images[reference].GetSpacing())[::-1]
    ref_centre = np.argwhere(ref).mean(axis=0) * spacing  # every voxel: exact, and cheap next to the network
    out = {}
    for modality, image in images.items():
        if modality == reference:
            continue
        mask = sitk.GetArrayViewFromImage(image) > 0
        if not mask.any():
            continue
        centre = np.argwhere(mask).mean(axis=0) * spacing
        dice = 2.0 * np.count_nonzero(mask & ref) / (np.count_nonzero(mask) + np.count_nonzero(ref))
        out[modality] = (float(np.linalg.norm(centre - ref_centre)), float(dice))
    return out


def misregistration_warnings(images: Dict[str, sitk.Image]) -> List[str]:
    """A sentence per sequence that looks misregistered to the T1ce, with the fix."""
    warnings = []
    for modality, (offset, dice) in outline_offsets(images).items():
        if offset > MISREGISTERED_MM or dice < MIN_OUTLINE_DICE:
            warnings.append(f"{display_name(modality)} looks misregistered to the T1ce, or is another patient's "
                            f"scan: its brain outline is {offset:.1f} mm from the T1ce's and overlaps it by {dice:.2f} "
                            f"(one patient's co-registered sequences: under {MISREGISTERED_MM:g} mm and over "
                            f"{MIN_OUTLINE_DICE:.2f}); check it is this patient's, then segment with --coregister to "
                            "align the sequences rigidly to the T1ce")
    return warnings


def coregister_to_t1ce(images: Dict[str, sitk.Image], note: Callable[[str], None] = lambda m: None) -> Dict[str, sitk.Image]:
    """Each sequence registered rigidly to the T1ce (the follow-up's registration) and resampled onto its grid."""
    from .followup.registration import register_to_baseline, resample_to_baseline

    out = {"t1ce": images["t1ce"]}
    for modality in MODALITIES:
        if modality == "t1ce" or modality not in images:
            continue
        result = register_to_baseline(images["t1ce"], images[modality])
        out[modality] = resample_to_baseline(images[modality], images["t1ce"], result.transform)
        angle, shift = result.rotation_angle_deg, float(np.linalg.norm(result.translation_mm))
        note(f"{display_name(modality)} was registered rigidly to the T1ce (moved {shift:.1f} mm, turned "
             f"{angle:.1f} degrees; correlation {result.correlation:.2f} after).")
        if result.warning:  # e.g. a low correlation: another patient's scan?
            note(f"{display_name(modality)}: {result.warning}")
    return {m: out[m] for m in MODALITIES if m in out}
