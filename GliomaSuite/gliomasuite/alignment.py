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

* **Sequences in the wrong place** (all four given): over the brain, T1 and T1ce rise and fall together,
  and so do T2 and FLAIR (rank correlations); a study whose files pair up better the other way (T1 with
  T2 or FLAIR, T1ce with the other) has sequences swapped across those pairs (T1ce given as FLAIR, T1 as
  T2, ...) and is refused like a failed brain check. T2 and FLAIR swapped keep the pairs: fluid then
  follows T1 more closely in the image given as T2 than in the one given as FLAIR (in a real T2 fluid
  is bright where T1 is dark; FLAIR suppresses it), and a warning says so. T1 and T1ce swapped are not
  checked: a tumour without enhancement gives no way to tell them apart.

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
#: Unless at least this share of its brain lies within the T1ce's: then it covers only part of the brain,
#: which is said instead (Brats18_2013_20_1's FLAIR slab: "covers only 66%" from tools/brain_check_report.py;
#: a FLAIR moved 10 mm, or another patient's, has more of its brain outside and is still named, as
#: Testing/core/test_alignment.py checks). Set on that one case.
PARTIAL_INSIDE = 0.98


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


#: Voxels of the brain sampled for the sequence correlations (every n-th so that about this many are used).
SEQUENCE_SAMPLE = 40000


def _rank_correlations(images: Dict[str, sitk.Image]) -> Dict[Tuple[str, str], float]:
    """Spearman correlation of every two of the four sequences over brain voxels (all four non-zero)."""
    arrays = {m: sitk.GetArrayViewFromImage(images[m]) for m in MODALITIES}
    brain = np.all([arrays[m] > 0 for m in MODALITIES], axis=0).ravel()
    where = np.flatnonzero(brain)
    where = where[:: max(1, where.size // SEQUENCE_SAMPLE)]
    ranks = {}
    for m in MODALITIES:
        values = np.asarray(arrays[m]).ravel()[where]
        ranks[m] = np.argsort(np.argsort(values, kind="stable"), kind="stable").astype(np.float64)
    matrix = np.corrcoef(np.array([ranks[m] for m in MODALITIES]))
    return {(a, b): float(matrix[i, j]) for i, a in enumerate(MODALITIES) for j, b in enumerate(MODALITIES) if i < j}


def sequence_order_scores(images: Dict[str, sitk.Image]) -> Dict[str, float]:
    """The two numbers the swap check compares with 0 (positive as they should be; all four sequences
    needed): ``pairing``, how much better T1-T1ce and T2-FLAIR go together than either other
    pairing (sum of rank correlations), and ``flair_vs_t2``, how much closer FLAIR follows T1 and T1ce
    than T2 does (``tools/brain_check_report.py`` prints both for a folder of studies)."""
    return _order_scores(_rank_correlations(images))


def _order_scores(c: Dict[Tuple[str, str], float]) -> Dict[str, float]:
    pairing = c["t1", "t1ce"] + c["t2", "flair"] - max(c["t1", "t2"] + c["t1ce", "flair"], c["t1", "flair"] + c["t1ce", "t2"])
    flair_vs_t2 = c["t1", "flair"] + c["t1ce", "flair"] - c["t1", "t2"] - c["t1ce", "t2"]
    return {"pairing": pairing, "flair_vs_t2": flair_vs_t2}


def swapped_sequences(images: Dict[str, sitk.Image]) -> Tuple[List[str], List[str]]:
    """``(problems, warnings)`` in words: sequences swapped across the T1/T1ce and T2/FLAIR pairs (a problem:
    not segmented unless the user insists), T2 and FLAIR swapped (a warning). Nothing unless all four are given."""
    if not set(MODALITIES) <= set(images):
        return [], []
    c = _rank_correlations(images)
    scores = _order_scores(c)
    problems, warnings = [], []
    if scores["pairing"] < 0:
        other = (("t1", "t2", "t1ce", "flair") if c["t1", "t2"] + c["t1ce", "flair"] >= c["t1", "flair"] + c["t1ce", "t2"]
                 else ("t1", "flair", "t1ce", "t2"))
        names = [display_name(m) for m in other]
        problems.append(f"the sequences look swapped: the images given as {names[0]} and {names[1]} go together, and "
                        f"so do {names[2]} and {names[3]}, where T1 should go with T1ce and T2 with FLAIR; check which "
                        "file is which sequence")
    elif scores["flair_vs_t2"] < 0:
        warnings.append("T2 and FLAIR look swapped: fluid in the image given as FLAIR is brighter relative to T1 than in "
                        "the one given as T2 (FLAIR suppresses fluid); check which file is which, as edema is read "
                        "mostly from FLAIR")
    return problems, warnings


def outline_offsets(images: Dict[str, sitk.Image], reference: str = "t1ce") -> Dict[str, Tuple[float, float]]:
    """For each sequence but ``reference``: (distance in mm between the centres of their brain outlines,
    Dice of the outlines). The images must share one grid (as :func:`gliomasuite.study.load_study` gives)."""
    if reference not in images:
        return {}
    ref = sitk.GetArrayViewFromImage(images[reference]) > 0
    if not ref.any():
        return {}
    spacing = np.array(images[reference].GetSpacing())[::-1]
    ref_centre = _centre(ref) * spacing
    out = {}
    for modality, image in images.items():
        if modality == reference:
            continue
        mask = sitk.GetArrayViewFromImage(image) > 0
        if not mask.any():
            continue
        centre = _centre(mask) * spacing
        dice = 2.0 * np.count_nonzero(mask & ref) / (np.count_nonzero(mask) + np.count_nonzero(ref))
        out[modality] = (float(np.linalg.norm(centre - ref_centre)), float(dice))
    return out


def _centre(mask: np.ndarray) -> np.ndarray:
    """The mean (z, y, x) index of a mask's voxels, from its counts along each axis (every voxel, exactly,
    without listing them)."""
    n = np.count_nonzero(mask)
    centre = []
    for axis in range(3):
        counts = np.count_nonzero(mask, axis=tuple(a for a in range(3) if a != axis))
        centre.append(float(np.dot(counts, np.arange(counts.size))) / n)
    return np.array(centre)


def _inside_reference(images: Dict[str, sitk.Image], modality: str, reference: str = "t1ce") -> Tuple[float, float]:
    """(share of ``modality``'s brain outline inside the reference's, share of the reference's it covers)."""
    mask = sitk.GetArrayViewFromImage(images[modality]) > 0
    ref = sitk.GetArrayViewFromImage(images[reference]) > 0
    both = np.count_nonzero(mask & ref)
    return both / max(np.count_nonzero(mask), 1), both / max(np.count_nonzero(ref), 1)


def misregistration_warnings(images: Dict[str, sitk.Image]) -> List[str]:
    """A sentence per sequence that looks misregistered to the T1ce, with the fix; or, for a sequence
    whose brain lies within the T1ce's but covers only part of it (a partial acquisition, such as a
    FLAIR slab), a sentence saying how much it covers."""
    warnings = []
    for modality, (offset, dice) in outline_offsets(images).items():
        if offset > MISREGISTERED_MM or dice < MIN_OUTLINE_DICE:
            inside, covered = _inside_reference(images, modality)
            if inside >= PARTIAL_INSIDE:
                warnings.append(f"{display_name(modality)} covers only {100 * covered:.0f}% of the brain the T1ce shows "
                                f"(all of it within the T1ce's brain: a partial acquisition?); tumour outside it cannot be "
                                f"seen on {display_name(modality)}, so check the segments there")
                continue
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
