"""The brain check: does a study look like skull-stripped brain MRI with each sequence in its place?

The V-Net only saw skull-stripped brains. Given a head with its skull, another body part, part of a
brain, or one volume chosen for two sequences, it labels tissue at random, and a reader may not
notice. ``segment_study`` runs this check on the prepared study before the network and, when it
fails, returns an empty map with the reasons instead (unless the user says to go on). Plain numpy:
the Slicer glue imports it without PyTorch.
"""

from typing import List, Sequence

import numpy as np

from .modalities import MODALITIES, display_name

# The thresholds. Every labelled BraTS brain and the unlabelled real case in the test data pass
# (Testing/core/test_brain_check.py asserts it, with margins): 1174-1747 cm3, filling 55-62% of their
# box, no two sequences correlated above 0.88 (tools/brain_check_report.py prints these per study).
#: Foreground (voxels above zero, 1 mm) of a skull-stripped adult brain, cm3. A child's brain can be
#: smaller: the message says so, and the user may go on.
BRAIN_CM3 = (700, 2500)
#: Fraction of its box the foreground fills (the box that holds all but 0.5% of the foreground at
#: each end of each axis, so a few stray voxels do not stretch it): near 1 when the background is
#: not zero (an unstripped acquisition keeps its noise) or the image is a box of tissue; low when
#: the foreground is scattered voxels rather than one brain.
BRAIN_FILL = (0.25, 0.80)
BOX_TAIL = 0.005
#: Two sequences correlated this closely inside the brain are one image chosen twice.
SAME_IMAGE_CORRELATION = 0.995
SAME_IMAGE_PHRASE = "look like the same image"
#: What to do with images that fail the check for their size or shape.
SKULL_STRIP_HINT = ("Images that still show the skull need skull-stripping first (for example HD-BET, SynthStrip, "
                    "or Slicer's SwissSkullStripper extension), with the background set to zero.")


def input_problems(prepared, present: Sequence[str]) -> List[str]:
    """Why ``prepared`` (a :class:`gliomasuite.preprocess.PreparedStudy`) does not look like a
    skull-stripped brain MRI study, in words (empty if it does).

    ``present`` names the modalities the user gave (absent ones are zeros and are not compared).
    Independent of the network, and cheap next to it.
    """
    problems = []
    brain = prepared.brain
    foreground_cm3 = float(brain.sum()) / 1000.0  # 1 mm voxels
    if not BRAIN_CM3[0] <= foreground_cm3 <= BRAIN_CM3[1]:
        hint = ("a head with its skull, or another body part?" if foreground_cm3 > BRAIN_CM3[1]
                else "only part of the brain, or not a brain? A young child's brain can be this small")
        problems.append(f"the foreground (voxels above zero) is {foreground_cm3:.0f} cm3, while a skull-stripped "
                        f"adult brain is {BRAIN_CM3[0]}-{BRAIN_CM3[1]} cm3 ({hint})")
    fill = box_fill(brain)
    if fill > BRAIN_FILL[1]:
        problems.append(f"the foreground fills {fill:.0%} of the box around it, while a brain fills "
                        f"{BRAIN_FILL[0]:.0%}-{BRAIN_FILL[1]:.0%} (a background that is not zero, as in images "
                        "that are not skull-stripped?)")
    elif fill < BRAIN_FILL[0]:
        problems.append(f"the foreground fills only {fill:.0%} of the box around it, while a brain fills "
                        f"{BRAIN_FILL[0]:.0%}-{BRAIN_FILL[1]:.0%} (scattered voxels rather than one brain?)")
    channels = [i for i, m in enumerate(MODALITIES) if m in present]
    # Every 8th brain voxel (some 180,000 in an adult brain): the same correlation, an eighth of the
    # time; picked before the channels, so only those voxels are copied.
    inside = prepared.array.reshape(len(prepared.array), -1)[:, np.flatnonzero(brain)[::8]][channels]
    if inside.shape[1] > 1:
        spread = inside.std(axis=1)
        for i, c in enumerate(channels):
            if spread[i] == 0:
                problems.append(f"{display_name(MODALITIES[c])} is blank (one value) inside the brain: choose the "
                                "image itself, not a mask or an empty volume")
        varying = [i for i in range(len(channels)) if spread[i] > 0]
        correlation = np.corrcoef(inside[varying]) if len(varying) > 1 else np.ones((1, 1))
        for a in range(len(varying)):
            for b in range(a + 1, len(varying)):
                if correlation[a, b] >= SAME_IMAGE_CORRELATION:
                    names = [display_name(MODALITIES[channels[varying[k]]]) for k in (a, b)]
                    problems.append(f"{names[0]} and {names[1]} {SAME_IMAGE_PHRASE} (correlation "
                                    f"{correlation[a, b]:.3f} inside the brain): choose the right volume for each")
    return problems


def box_fill(mask: np.ndarray, tail: float = BOX_TAIL) -> float:
    """Fraction of the box around ``mask`` that it fills, the box leaving out ``tail`` of its voxels at
    each end of each axis (from the per-axis profiles: cheap, and a few stray voxels do not count)."""
    total = mask.sum()
    if total == 0:
        return 0.0
    box = []
    for axis in range(mask.ndim):
        profile = np.cumsum(mask.sum(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        low = int(np.searchsorted(profile, tail * total, side="right"))
        high = int(np.searchsorted(profile, (1.0 - tail) * total, side="left"))
        box.append(slice(low, high + 1))
    inner = mask[tuple(box)]
    return float(inner.sum()) / inner.size


def what_to_do(problems: Sequence[str]) -> str:
    """The skull-stripping advice (with a leading space) when a problem points to an unstripped head, else ""."""
    unstripped = any("not skull-stripped" in p or "with its skull" in p for p in problems)
    return " " + SKULL_STRIP_HINT if unstripped else ""
