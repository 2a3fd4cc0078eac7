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
# (Testing/core/test_brain_check.py): 1174-1747 cm3, filling 36-42% of their bounding box, no two
# sequences correlated above 0.88.
#: Foreground (voxels above zero, 1 mm) of a skull-stripped adult brain, cm3:
BRAIN_CM3 = (700, 2500)
#: Fraction of its bounding box the foreground fills: near 1 when the background is not zero (an
#: unstripped acquisition keeps its noise) or the image is a box of tissue.
BRAIN_FILL = (0.25, 0.60)
#: Two sequences correlated this closely inside the brain are one image chosen twice.
SAME_IMAGE_CORRELATION = 0.995
SAME_IMAGE_PHRASE = "are the same image"
#: What to do with images that fail the check for their size or shape.
SKULL_STRIP_HINT = ("Images that still show the skull need skull-stripping first (for example HD-BET, SynthStrip, "
                    "or Slicer's SwissSkullStripper extension), with the background set to zero.")


def input_problems(prepared, present: Sequence[str]) -> List[str]:
    """Why ``prepared`` (a :class:`gliomasuite.preprocess.PreparedStudy`) does not look like a
    skull-stripped brain MRI study, in words (empty if it does).

    ``present`` names the modalities the user gave (absent ones are zeros and are not compared).
    About 0.06 s on a BraTS study (two CPU threads), and independent of the network.
    """
    problems = []
    foreground_cm3 = float(prepared.brain.sum()) / 1000.0  # 1 mm voxels
    if not BRAIN_CM3[0] <= foreground_cm3 <= BRAIN_CM3[1]:
        hint = ("a head with its skull, or another body part" if foreground_cm3 > BRAIN_CM3[1]
                else "only part of the brain, or not a brain")
        problems.append(f"the foreground (voxels above zero) is {foreground_cm3:.0f} cm3, while a skull-stripped "
                        f"brain is {BRAIN_CM3[0]}-{BRAIN_CM3[1]} cm3 ({hint}?)")
    fill = float(prepared.brain.mean())
    if not BRAIN_FILL[0] <= fill <= BRAIN_FILL[1]:
        problems.append(f"the foreground fills {fill:.0%} of its bounding box, while a brain fills "
                        f"{BRAIN_FILL[0]:.0%}-{BRAIN_FILL[1]:.0%} (a background that is not zero, as in images "
                        "that are not skull-stripped?)")
    channels = [i for i, m in enumerate(MODALITIES) if m in present]
    # Every 8th brain voxel (some 180,000 in an adult brain): the same correlation, an eighth of the time.
    inside = prepared.array[channels][:, prepared.brain][:, ::8]
    if inside.shape[1] > 1:
        with np.errstate(invalid="ignore", divide="ignore"):
            correlation = np.corrcoef(inside)
        for a in range(len(channels)):
            for b in range(a + 1, len(channels)):
                if correlation[a, b] >= SAME_IMAGE_CORRELATION:
                    names = [display_name(MODALITIES[channels[a]]), display_name(MODALITIES[channels[b]])]
                    problems.append(f"{names[0]} and {names[1]} {SAME_IMAGE_PHRASE} (correlation "
                                    f"{correlation[a, b]:.3f} inside the brain): choose the right volume for each")
    return problems


def what_to_do(problems: Sequence[str]) -> str:
    """The advice that goes with ``problems`` (with a leading space), or "" when only sequences were mixed up."""
    return "" if all(SAME_IMAGE_PHRASE in p for p in problems) else " " + SKULL_STRIP_HINT
