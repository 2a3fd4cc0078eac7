"""Which MRI modality a file, DICOM series or Slicer volume is, decided from its name.

Every model in GliomaSuite takes its four input channels in the order of :data:`MODALITIES`.
Inputs are matched to channels by name, never by position, in the conventions users actually
meet (case-insensitive):

* BraTS 2021: ``..._t1``, ``..._t1ce``, ``..._t2``, ``..._flair``
* BraTS 2023: ``...-t1n``, ``...-t1c``, ``...-t2w``, ``...-t2f``
* scanner and site names: ``T1Gd``, ``T1post``, ``T1-post``, ``T1C``, ``T1+C``, ``T1_contrast``,
  ``MPRAGE`` (T1; ``MPRAGE_Gd`` is T1ce), ``T1w``, ``T2w``, ``T2``, ``FLAIR``, ``T2-FLAIR``,
  ``T2_FLAIR``, DICOM series descriptions such as ``AX T1 +C`` or ``Sag 3D FLAIR``.

Prefixes are ambiguous (``t1`` / ``t1c`` / ``t1ce``, ``t2`` / ``t2f`` / ``t2-flair``), so a name is
split into words at every character that is not a letter or digit and the most specific reading wins:
FLAIR, then T1ce, then T2, then T1. A name that reads as two different modalities (``t1_to_t2``) or
as none is reported as unknown (``None``) rather than guessed.
"""

from __future__ import annotations

import os
import re
from typing import Optional

#: Channel order of every model, and the keys of :attr:`gliomasuite.study.Study.images`.
MODALITIES = ("t1", "t1ce", "t2", "flair")
#: The modalities no shipped model can do without; T1 and T2 may be missing (a model trained without
#: them is then chosen).
ALWAYS_NEEDED = ("t1ce", "flair")

#: Names for people (notes, messages, Slicer volume names).
DISPLAY_NAMES = {"t1": "T1", "t1ce": "T1ce", "t2": "T2", "flair": "FLAIR"}

#: Image file suffixes GliomaSuite reads through SimpleITK (longest first, lower case).
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

_STRIP_SUFFIXES = IMAGE_SUFFIXES + (".dcm", ".ima", ".gz")

# A word boundary: not preceded / followed by a letter or digit.
_B0 = r"(?<![a-z0-9])"
_B1 = r"(?![a-z0-9])"
_SEP = r"[\s_\-.]*"

# T1-weighted FLAIR (a T1 sequence on some scanners) must not be read as (T2-)FLAIR.
_T1_FLAIR = re.compile(_B0 + r"t1w?" + _SEP + r"flair" + _B1)
_FLAIR = re.compile(
    _B0 + r"t2w?" + _SEP + r"flair"  # T2-FLAIR, T2_FLAIR, T2FLAIR, T2w FLAIR
    + r"|flair"  # anywhere: FLAIR, 3DFLAIR, flair_ax ...
    + r"|" + _B0 + r"t2f" + _B1  # BraTS 2023
    + r"|" + _B0 + r"t2w?" + _SEP + r"ir" + _B1  # T2-IR (inversion recovery)
    + r"|" + _B0 + r"dark[\s_\-]?fluid" + _B1  # Siemens: t2_tirm_tra_dark-fluid
)
# Contrast words that mean "after gadolinium" wherever they appear in a T1 name.
_CONTRAST_WORD = (
    r"(?:ce|c|gd|gad|gado|gadolinium|dota|dotarem|contrast|contrasted|postcontrast|postgd|"
    r"enh|enhanced|enhancing|ce3d|post)"
)
_T1CE = re.compile(
    # T1ce, T1C, T1Gd, T1post, T1-post, T1_contrast, T1+C, T1+Gd, T1wCE, T1 post contrast ...
    _B0 + r"t1w?i?" + r"[\s_\-.+]*" + _CONTRAST_WORD + r"\+?" + _B1
    + r"|" + _B0 + r"t1w?i?\+"  # T1+  (T1+ alone, T1+C handled above)
    # MPRAGE / SPGR / BRAVO with contrast words right after: MPRAGE_Gd, MPRAGE post, SPGR+C
    + r"|" + _B0 + r"(?:mp[\s_\-]?rage|spgr|fspgr|bravo|vibe|tfl3d|t1mprage)"
    + r"[\s_\-.+]*" + _CONTRAST_WORD + r"\+?" + _B1
)
# Unambiguous contrast marks anywhere in the name turn a T1 into a T1ce ("AX T1 SE +C", "Gd T1").
_CONTRAST_ANYWHERE = re.compile(
    r"\+\s*(?:c|gd|gad)" + _B1
    + r"|" + _B0 + r"(?:gd|gad|gado|gadolinium|postcontrast|post[\s_\-]contrast|postgd|post[\s_\-]gd|km)" + _B1
    + r"|" + _B0 + r"(?:with|w)[\s_\-/]*(?:contrast|gd|gad)" + _B1
)
_T2_STAR = re.compile(_B0 + r"(?:t2\*|(?:t2[\s_\-]?star|t2s|swi|gre)" + _B1 + ")")
_T2 = re.compile(_B0 + r"t2(?:w|wi|tse|fse)?" + _B1)
_T1 = re.compile(
    _B0 + r"t1(?:w|wi|n|pre|native|tse|fse|se)?" + _B1
    + r"|" + _B0 + r"(?:mp[\s_\-]?rage|t1mprage|spgr|fspgr|bravo|tfl3d)" + _B1
)
# Pre-contrast / native marks win over nothing else: "T1 pre" stays T1.
# "post" after the T1 word ("T1 FS POST", "AX T1 SE POST"); before it ("Post_Scan_T1") it may mean
# post-treatment, so it is not read as contrast there.
_POST_AFTER = re.compile(_B0 + r"post" + _B1)
# Philips prefixes series descriptions with "s" (sT1W_3D_TFE, sT2W_FLAIR).
_PHILIPS = re.compile(_B0 + r"s(t[12]w)")
_NATIVE = re.compile(_B0 + r"(?:pre|precontrast|native|noncontrast|nc)" + _B1)

_SEGMENTATION = re.compile(
    r"(?:^|[^a-z0-9])(?:seg|segs|segm|segmentation|segmentations|label|labels|labelmap|lbl|"
    r"mask|masks|gt|groundtruth|ground[\s_\-]truth|truth|roi|annotation|annotations)(?:[^a-z]|$)"
    r"|mask|labelmap"
)


def _stem(name) -> str:
    """Lower-case base name without image suffixes (``/a/BraTS_01_T1ce.nii.gz`` -> ``brats_01_t1ce``)."""
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    text = str(name).strip().rstrip("/\\")
    text = re.split(r"[/\\]", text)[-1] if ("/" in text or "\\" in text) else text
    text = text.lower()
    changed = True
    while changed:
        changed = False
        for suffix in _STRIP_SUFFIXES:
            if text.endswith(suffix) and len(text) > len(suffix):
                text = text[: -len(suffix)]
                changed = True
                break
    return text


def identify_text(text: str) -> Optional[str]:
    """Modality named by free text (a DICOM SeriesDescription, a Slicer node name), or ``None``.

    Unlike :func:`identify_modality` the text is not treated as a path: no base name is taken and
    no suffix is stripped, so ``"AX T1/Gd"`` is read whole.
    """
    if text is None:
        return None
    s = " " + str(text).lower() + " "
    if is_segmentation_text(s):
        return None
    s = _PHILIPS.sub(r"\1", s)
    found = set()
    # T1-FLAIR is a T1 sequence: take it out before looking for (T2-)FLAIR.
    t1_flair = bool(_T1_FLAIR.search(s))
    s = _T1_FLAIR.sub(" t1 ", s)
    if _FLAIR.search(s):
        found.add("flair")
        s = _FLAIR.sub(" ", s)
    if _T1CE.search(s):
        found.add("t1ce")
        s = _T1CE.sub(" ", s)
    if _T2_STAR.search(s):
        s = _T2_STAR.sub(" ", s)  # T2* / SWI / GRE: not one of ours
    if _T2.search(s):
        found.add("t2")
        s = _T2.sub(" ", s)
    t1_match = _T1.search(s)
    if t1_match:
        contrast = _CONTRAST_ANYWHERE.search(s) or _POST_AFTER.search(s, t1_match.end())
        if contrast and not _NATIVE.search(s):
            found.add("t1ce")
        else:
            found.add("t1")
    elif t1_flair:
        found.add("t1")
    # One description often names a family twice ("T2 FLAIR", "T1 MPRAGE post"): keep the most
    # specific member; only different families (T1 and T2, T1 and FLAIR) are ambiguous.
    if "flair" in found:
        found.discard("t2")
    if "t1ce" in found:
        found.discard("t1")
    if len(found) == 1:
        return found.pop()
    return None


def identify_modality(name) -> Optional[str]:
    """File, folder or series name -> one of :data:`MODALITIES`, or ``None`` when it does not say.

    Only the last path component is read and image suffixes (``.nii.gz``, ``.nrrd``, ...) are
    dropped, so ``/data/T2 scans/case1_t1ce.nii.gz`` is T1ce. Segmentations (``_seg``, ``label``,
    ``mask``) are never a modality.

    >>> identify_modality("BraTS2021_00006_t1ce.nii.gz"), identify_modality("BraTS-GLI-00001-000-t2f")
    ('t1ce', 'flair')
    """
    if name is None:
        return None
    stem = _stem(name)
    if not stem:
        return None
    return identify_text(stem)


def is_segmentation_text(text: str) -> bool:
    """Whether free text names a label map / mask rather than an MRI image."""
    return bool(_SEGMENTATION.search(" " + str(text).lower() + " "))


def is_segmentation(name) -> bool:
    """Whether a file or folder name is a segmentation / label map / mask (``_seg``, ``-seg``, ...)."""
    return is_segmentation_text(_stem(name))


def display_name(modality: str) -> str:
    """``"t1ce"`` -> ``"T1ce"``."""
    return DISPLAY_NAMES.get(modality, str(modality))
