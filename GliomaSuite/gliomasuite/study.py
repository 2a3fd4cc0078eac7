"""Loading and validating a study: the T1, T1ce, T2 and FLAIR volumes of one patient at one time.

:func:`load_study` takes a folder (or a list of files / DICOM series folders, or a mapping from
modality to path), recognises each modality from its name (see :mod:`gliomasuite.modalities`),
reads the images with SimpleITK and checks, before any model runs, everything that would otherwise
fail later with an obscure message:

* every required modality is present, and no modality is claimed by two files;
* each file can be read, is complete (a truncated NIfTI is caught, SimpleITK alone fills it with
  zeros), is a single 3D grey-level volume, has only finite values and is not blank;
* all volumes share the T1ce's grid; volumes on another grid are resampled onto it (with a note),
  unless their fields of view hardly overlap, which means different anatomy or a missing
  registration and is refused.

Problems the user can fix raise :class:`~gliomasuite.errors.StudyError` with one plain sentence
naming the file, the problem and the fix. Loading never writes anything.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from .errors import StudyError
from .modalities import (
    IMAGE_SUFFIXES,
    MODALITIES,
    display_name,
    identify_modality,
    identify_text,
    is_segmentation,
)

__all__ = [
    "Study",
    "load_study",
    "load_image",
    "find_study_files",
    "find_segmentation",
    "MODALITIES",
]

#: Fraction of the smaller field of view that must lie inside the other one for two volumes to be
#: treated as the same anatomy (below it the study is refused instead of resampled).
MIN_FOV_OVERLAP = 0.5

_FORMATS = "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) or a folder holding a DICOM series"
_DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")
_SERIES_DESCRIPTION = "0008|103e"
_PROTOCOL_NAME = "0018|1030"
_CONTRAST_AGENT = "0018|0010"
_PATIENT_ID = "0010|0020"
_STUDY_UID = "0020|000d"
_FRAME_OF_REFERENCE = "0020|0052"
_STUDY_DATE = "0008|0020"
#: ContrastBolusAgent values that say no contrast was given (scanners write these instead of leaving it empty).
_NO_CONTRAST = {"none", "no", "nil", "n/a", "na", "-", "0"}
_MAX_DICOM_DEPTH = 4


# --------------------------------------------------------------------------------------------
# The study


@dataclass
class Study:
    """The volumes of one study, all float32 on one grid (the T1ce's, the geometry of every output).

    ``images`` and ``paths`` are keyed by modality (``"t1"``, ``"t1ce"``, ``"t2"``, ``"flair"``), in
    the order of :data:`~gliomasuite.modalities.MODALITIES`, holding only those present.
    ``notes`` are sentences for the user about what the loader did (resampling, ignored files).
    """

    images: Dict[str, sitk.Image]
    paths: Dict[str, Path]
    notes: List[str] = field(default_factory=list)
    #: The modality whose grid every image is on: ``"t1ce"`` unless the study has no T1ce.
    reference_modality: str = "t1ce"

    @property
    def reference(self) -> sitk.Image:
        """The T1ce image: its size, spacing, origin and direction are those of every output."""
        return self.images[self.reference_modality]

    @property
    def modalities(self) -> Tuple[str, ...]:
        """Modalities present, in channel order."""
        return tuple(m for m in MODALITIES if m in self.images)

    def array(self, modality: str) -> np.ndarray:
        """Read-only numpy view (z, y, x) of one modality's voxels (no copy)."""
        key = str(modality).lower()
        if key not in self.images:
            raise KeyError(
                f"This study has no {display_name(key)} image (it has {', '.join(map(display_name, self.modalities))})."
            )
        return sitk.GetArrayViewFromImage(self.images[key])


# --------------------------------------------------------------------------------------------
# Reading one image


def _is_image_file_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _looks_like_dicom(path: Path) -> bool:
    """DICOM Part 10 preamble ("DICM" at byte 128), or a DICOM suffix."""
    if path.name.lower().endswith(_DICOM_SUFFIXES):
        return True
    if _is_image_file_name(path.name) or path.name.startswith("."):
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _dicom_files(folder: Path) -> List[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [p for p in entries if p.is_file() and not p.name.startswith(".") and _looks_like_dicom(p)]


def _dicom_series(folder: Path) -> List[Tuple[str, Tuple[str, ...]]]:
    """(series UID, file names) for each DICOM series directly inside ``folder``."""
    try:
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError:
        return []
    series = []
    for sid in ids:
        try:
            files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid))
        except RuntimeError:
            continue
        if files:
            series.append((sid, files))
    return series


def _dicom_tag(file_name: str, tag: str) -> Optional[str]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(file_name))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    if reader.HasMetaDataKey(tag):
        value = reader.GetMetaData(tag).strip()
        return value or None
    return None


def _nifti_check(path: Path) -> Tuple[float, int]:
    """Check a NIfTI file's voxel data against its header: (fraction missing, non-finite count).

    SimpleITK reads a truncated or corrupted NIfTI without complaint (the rest becomes zeros) and
    turns NaN and infinity into 0, so both are checked here on the raw data. Returns ``(0, 0)`` when
    the header is not NIfTI-1/2 (SimpleITK then judges the file). Raises ``OSError``, ``EOFError``
    or ``zlib.error`` for a damaged gzip stream (its CRC is checked).
    """
    compressed = path.name.lower().endswith(".gz")
    opener = gzip.open if compressed else open
    with opener(path, "rb") as fh:
        head = fh.read(540)
        if len(head) < 348:
            return 0.0, 0
        for endian in "<>":
            (sizeof_hdr,) = struct.unpack(endian + "i", head[:4])
            if sizeof_hdr in (348, 540):
                break
        else:
            return 0.0, 0
        if sizeof_hdr == 348:
            dims = struct.unpack(endian + "8h", head[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", head[70:74])
            (vox_offset,) = struct.unpack(endian + "f", head[108:112])
        else:
            if len(head) < 540:
                return 0.0, 0
            datatype, bitpix = struct.unpack(endian + "2h", head[12:16])
            dims = struct.unpack(endian + "8q", head[16:80])
            (vox_offset,) = struct.unpack(endian + "q", head[168:176])
        ndim = dims[0]
        if not 1 <= ndim <= 7 or bitpix <= 0 or not np.isfinite(vox_offset) or vox_offset < 0:
            return 0.0, 0
        offset = int(vox_offset)
        n_voxels = int(np.prod([max(int(d), 1) for d in dims[1 : ndim + 1]], dtype=np.int64))
        data_bytes = n_voxels * bitpix // 8
        # float32, float64, complex64, complex128: the only types that can hold NaN / inf.
        float_type = {16: "f4", 64: "f8", 32: "f4", 1792: "f8"}.get(int(datatype))
        nonfinite = 0
        if compressed:
            if float_type:
                raw = head + fh.read()
                total = len(raw)
                available = max(0, min(total, offset + data_bytes) - offset)
                values = np.frombuffer(raw, dtype=endian + float_type,
                                       count=available // np.dtype(float_type).itemsize, offset=offset)
                nonfinite = int(values.size - np.count_nonzero(np.isfinite(values)))
            else:
                total = len(head)
                while True:
                    chunk = fh.read(1 << 22)
                    if not chunk:
                        break
                    total += len(chunk)
        else:
            total = os.path.getsize(path)
            if float_type:
                available = max(0, min(total, offset + data_bytes) - offset)
                values = np.fromfile(path, dtype=endian + float_type,
                                     count=available // np.dtype(float_type).itemsize, offset=offset)
                nonfinite = int(values.size - np.count_nonzero(np.isfinite(values)))
    missing = 0.0
    if total < offset + data_bytes and data_bytes > 0:
        missing = min(1.0, (offset + data_bytes - total) / data_bytes)
    return missing, nonfinite


def _nonfinite_error(where: str, count: int) -> StudyError:
    return StudyError(
        f"{where} contains {count} voxel{'s' if count != 1 else ''} that are not numbers (NaN or "
        f"infinity), which usually means a failed processing step; redo that step or export the "
        f"original image again."
    )


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _read_raw(path: Path, series_files: Optional[Sequence[str]] = None, what: str = "") -> sitk.Image:
    """Read a file or a DICOM series with SimpleITK; every failure becomes a StudyError.

    ``what`` (e.g. ``"the T2 image"``) is put before the path in messages.
    """
    named = f"{what} {path}" if what else str(path)
    if series_files is not None:
        try:
            if len(series_files) == 1:
                return sitk.ReadImage(str(series_files[0]))
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames([str(f) for f in series_files])
            return reader.Execute()
        except RuntimeError as exc:
            raise StudyError(
                f"The DICOM series of {named} could not be read (it may be damaged, incomplete or "
                f"compressed in a way SimpleITK does not support); export the series again from "
                f"the scanner or PACS, or convert it to NIfTI with dcm2niix, and try again."
            ) from exc
    if not path.exists():
        raise StudyError(f"{_cap(named)} does not exist; check the path and try again.")
    if path.is_dir():
        series = _dicom_series(path)
        if not series:
            raise StudyError(
                f"The folder {path} holds no DICOM series; give an image file ({_FORMATS}) or the "
                f"folder that holds the DICOM files of one series."
            )
        if len(series) > 1:
            descriptions = [(_dicom_tag(files[0], _SERIES_DESCRIPTION) or uid) for uid, files in series]
            raise StudyError(
                f"The folder {path} holds {len(series)} DICOM series ({', '.join(descriptions)}); "
                f"give the study folder to load_study, or put each series in its own folder."
            )
        return _read_raw(path, series[0][1], what)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        if os.path.getsize(path) == 0:
            problem = "is empty (0 bytes)"
        elif not _is_image_file_name(path.name) and not _looks_like_dicom(path):
            raise StudyError(
                f"{_cap(named)} is not in a format GliomaSuite reads; save it as {_FORMATS} and try again."
            ) from exc
        else:
            problem = "is damaged or is not a readable image"
        raise StudyError(
            f"Could not read {named}: the file {problem}; export or copy it again from the original "
            f"source and try again."
        ) from exc
    if path.name.lower().endswith((".nii", ".nii.gz")):
        try:
            missing, nonfinite = _nifti_check(path)
        except (OSError, EOFError, zlib.error) as exc:
            raise StudyError(
                f"Could not read {named}: the compressed file is damaged or truncated; copy or "
                f"export it again from the original source and try again."
            ) from exc
        if missing:
            raise StudyError(
                f"{_cap(named)} is truncated ({max(missing, 0.01):.0%} of its voxel data is missing, usually "
                f"an interrupted copy or download); copy or export it again and try again."
            )
        if nonfinite:
            raise _nonfinite_error(_cap(named), nonfinite)
    return image


#: A head MRI as stored spans at most this along any axis (a whole-spine or body scan is not one), and its
#: voxels are at least this big: anything else is a wrong header, and resampling it to 1 mm voxels
#: could take more memory than the machine has (a 40-voxel image with 1e5 mm spacing would be 4 km long).
MAX_EXTENT_MM = 600.0
MIN_SPACING_MM = 0.05


def _as_volume(image: sitk.Image, where: str) -> Tuple[sitk.Image, Optional[str]]:
    """Check that an image is one 3D grey-level volume with finite, non-constant values.

    Returns the image as float32 and an optional note.
    """
    note = None
    components = image.GetNumberOfComponentsPerPixel()
    if components > 1:
        raise StudyError(
            f"{where} has {components} values per voxel (a colour or multi-channel image), but "
            f"GliomaSuite needs one grey-level MRI volume per file; save each modality as its own "
            f"3D file."
        )
    dim = image.GetDimension()
    size = image.GetSize()
    if dim == 4 and size[3] == 1:
        image = sitk.Extract(image, [size[0], size[1], size[2], 0], [0, 0, 0, 0])
        note = f"{where} is stored as 4D with a single volume; its 3D volume was used."
        dim, size = image.GetDimension(), image.GetSize()
    if dim == 2:
        raise StudyError(
            f"{where} is a 2D image (a single slice of {size[0]}x{size[1]}), but GliomaSuite needs "
            f"the whole 3D volume; export the full series as one 3D file and try again."
        )
    if dim == 4:
        raise StudyError(
            f"{where} is a 4D image holding {size[3]} volumes (a time series, or several modalities "
            f"in one file), but GliomaSuite needs one 3D volume per modality; save each volume as "
            f"its own 3D file and try again."
        )
    if dim != 3:
        raise StudyError(
            f"{where} is a {dim}D image, but GliomaSuite needs one 3D volume per modality; save "
            f"each modality as its own 3D file and try again."
        )
    if min(size) < 2:
        raise StudyError(
            f"{where} holds a single slice ({size[0]}x{size[1]}x{size[2]} voxels), but GliomaSuite "
            f"needs the whole 3D volume; export the full series and try again."
        )
    spacing = np.array(image.GetSpacing(), dtype=float)
    extent = spacing * np.array(size)
    if not np.all(np.isfinite(spacing) & (spacing > 0)):
        raise StudyError(f"{where} has an invalid voxel size in its header ({', '.join(f'{v:g}' for v in spacing)} mm); "
                         "export the series again so the header holds its real spacing.")
    if extent.max() > MAX_EXTENT_MM or spacing.min() < MIN_SPACING_MM:
        raise StudyError(f"{where} has a voxel size of {' x '.join(f'{v:g}' for v in spacing)} mm, so it spans "
                         f"{' x '.join(f'{v:.3g}' for v in extent)} mm: not a head MRI as stored (a brain scan spans "
                         f"at most {MAX_EXTENT_MM:g} mm, in voxels of at least {MIN_SPACING_MM:g} mm); check its header.")
    if image.GetPixelID() != sitk.sitkFloat32:
        image = sitk.Cast(image, sitk.sitkFloat32)
    values = sitk.GetArrayViewFromImage(image)
    finite = np.isfinite(values)
    if not finite.all():
        raise _nonfinite_error(where, int(values.size - np.count_nonzero(finite)))
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        what = "every voxel is zero (a blank image)" if lo == 0 else f"every voxel has the same value ({lo:g})"
        raise StudyError(
            f"{where} holds no image: {what}, which usually means a failed export; export the "
            f"image again from the original source and try again."
        )
    return image, note


def load_image(path) -> sitk.Image:
    """Read one image file or DICOM series folder as a validated float32 3D SimpleITK image.

    Raises :class:`StudyError` (one sentence naming the file) when it does not exist, cannot be read,
    is truncated, is not a single 3D grey-level volume, has NaN/inf values or is blank.
    """
    path = Path(path).expanduser()
    image = _read_raw(path)
    image, _ = _as_volume(image, str(path))
    return image


# --------------------------------------------------------------------------------------------
# Finding the files of a study


@dataclass
class _Candidate:
    path: Path  # file, or folder of a DICOM series
    label: str  # how the user sees it in messages
    modality: Optional[str]
    series_files: Optional[Tuple[str, ...]] = None
    how: str = "file name"  # how the modality was recognised


def _describe_dicom(folder: Path, root: Optional[Path], files: Tuple[str, ...], single: bool) -> Tuple[Optional[str], str]:
    """Modality of a DICOM series (its folder or description, see :func:`_named_modality`); a T1 whose
    ContrastBolusAgent names an agent is the T1ce, so a pre- and a post-contrast series both described
    "AX T1" are told apart as a PACS export brings them."""
    modality, how = _named_modality(folder, root, files, single)
    if modality == "t1":
        agent = _dicom_tag(files[0], _CONTRAST_AGENT)
        if agent and agent.strip().lower() not in _NO_CONTRAST:
            return "t1ce", f"{how} with ContrastBolusAgent '{agent}'"
    return modality, how


def _named_modality(folder: Path, root: Optional[Path], files: Tuple[str, ...], single: bool) -> Tuple[Optional[str], str]:
    """Modality of a DICOM series: from its folder name(s) when it is alone there, else its tags."""
    if single:
        parts = [folder]
        if root is not None:
            parent = folder.parent
            while parent != root and root in parent.parents:
                parts.append(parent)
                parent = parent.parent
        for part in parts:
            modality = identify_modality(part.name)
            if modality:
                return modality, f"folder name '{part.name}'"
    for tag, tag_name in ((_SERIES_DESCRIPTION, "SeriesDescription"), (_PROTOCOL_NAME, "ProtocolName")):
        value = _dicom_tag(files[0], tag)
        if value:
            modality = identify_text(value)
            if modality:
                return modality, f"DICOM {tag_name} '{value}'"
    value = _dicom_tag(files[0], _SERIES_DESCRIPTION)
    return None, (f"SeriesDescription '{value}'" if value else "no SeriesDescription")


def _dicom_candidates(folder: Path, root: Optional[Path], label_root: Path) -> List[_Candidate]:
    series = _dicom_series(folder) if _dicom_files(folder) else []
    found = []
    for uid, files in series:
        modality, how = _describe_dicom(folder, root, files, single=len(series) == 1)
        try:
            label = str(folder.relative_to(label_root)) or folder.name
        except ValueError:
            label = str(folder)
        if label in ("", "."):
            label = folder.name
        label += os.sep
        if len(series) > 1:
            desc = _dicom_tag(files[0], _SERIES_DESCRIPTION)
            label = f"{label} [{desc or uid}]"
        found.append(_Candidate(folder, label, modality, files, how))
    return found


def _walk_dicom(folder: Path, root: Path, depth: int) -> List[_Candidate]:
    found = _dicom_candidates(folder, root, root)
    if depth >= _MAX_DICOM_DEPTH:
        return found
    try:
        subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return found
    for sub in subdirs:
        if is_segmentation(sub.name):
            continue
        found.extend(_walk_dicom(sub, root, depth + 1))
    return found


def _scan_folder(folder: Path) -> Tuple[List[_Candidate], List[str]]:
    """Candidates in a study folder (image files at its top level, DICOM series below) and notes."""
    candidates: List[_Candidate] = []
    ignored: List[str] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise StudyError(f"The folder {folder} cannot be opened ({exc.strerror}); check its permissions and try again.") from exc
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_file() and _is_image_file_name(entry.name):
            if is_segmentation(entry.name):
                ignored.append(f"{entry.name} was ignored (a segmentation or mask, not an MRI volume).")
                continue
            candidates.append(_Candidate(entry, entry.name, identify_modality(entry.name)))
    # DICOM files directly in the folder, then DICOM series in subfolders.
    candidates.extend(_dicom_candidates(folder, None, folder.parent))
    try:
        subdirs = sorted(p for p in entries if p.is_dir() and not p.name.startswith("."))
    except OSError:
        subdirs = []
    for sub in subdirs:
        if is_segmentation(sub.name):
            continue
        candidates.extend(_walk_dicom(sub, folder, 1))
    return candidates, ignored


def _candidate_for_path(path: Path) -> List[_Candidate]:
    if not path.exists():
        raise StudyError(f"{path} does not exist; check the path and try again.")
    if path.is_dir():
        found = _dicom_candidates(path, None, path.parent)
        if not found:
            raise StudyError(
                f"The folder {path} holds no DICOM series; give image files ({_FORMATS}) or "
                f"folders that each hold one DICOM series."
            )
        return found
    return [_Candidate(path, path.name, identify_modality(path.name))]


def _normalise_required(required: Iterable[str]) -> Tuple[str, ...]:
    if isinstance(required, str):
        required = (required,)
    out = []
    for item in required:
        key = str(item).lower()
        if key not in MODALITIES:
            key = identify_text(key) or key
        if key not in MODALITIES:
            raise ValueError(f"Unknown modality {item!r}; use some of {MODALITIES}.")
        if key not in out:
            out.append(key)
    return tuple(m for m in MODALITIES if m in out)


def _gather(source) -> Tuple[List[_Candidate], List[str], str]:
    """Candidates, notes about ignored files, and a phrase naming the source for messages."""
    if isinstance(source, Mapping):
        candidates = []
        for key, value in source.items():
            modality = _normalise_required((key,))[0]
            for cand in _candidate_for_path(Path(value).expanduser()):
                cand.modality, cand.how = modality, "given explicitly"
                candidates.append(cand)
        return candidates, [], "the files given"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.exists():
            raise StudyError(f"The study folder {path} does not exist; check the path and try again.")
        if path.is_dir():
            candidates, ignored = _scan_folder(path)
            return candidates, ignored, f"the folder {path}"
        return _candidate_for_path(path), [], f"the file {path}"
    if isinstance(source, (list, tuple)):
        if not source:
            raise StudyError("No files were given for the study; choose the T1, T1ce, T2 and FLAIR files of one patient.")
        candidates, ignored = [], []
        for item in source:
            path = Path(item).expanduser()
            if path.is_file() and is_segmentation(path.name):
                ignored.append(f"{path.name} was ignored (a segmentation or mask, not an MRI volume).")
                continue
            candidates.extend(_candidate_for_path(path))
        return candidates, ignored, "the files given"
    raise TypeError(f"load_study expects a folder, a list of files or a mapping, not {type(source).__name__}.")


def _assign(candidates: List[_Candidate], where: str, required: Tuple[str, ...],
            folder: Optional[Path]) -> Tuple[Dict[str, _Candidate], List[str]]:
    """Map modality -> candidate, refusing duplicates and missing required modalities."""
    by_modality: Dict[str, List[_Candidate]] = {}
    unknown = []
    for cand in candidates:
        if cand.modality is None:
            unknown.append(cand)
        else:
            by_modality.setdefault(cand.modality, []).append(cand)
    notes = []
    for modality in MODALITIES:
        claims = by_modality.get(modality, [])
        if len(claims) > 1:
            names = " and ".join(c.label for c in claims) if len(claims) == 2 else ", ".join(c.label for c in claims)
            if modality in required:
                raise StudyError(
                    f"{len(claims)} images in {where} claim to be the {display_name(modality)}: {names}; "
                    f"move or rename all but one so each modality appears once."
                )
            notes.append(f"{display_name(modality)} was not loaded: {names} all claim to be it.")
            del by_modality[modality]
    missing = [m for m in required if m not in by_modality]
    if missing:
        if not candidates:
            if folder is not None:
                sub = _first_subfolder_with_images(folder)
                hint = (f"; it has subfolders with images, so choose one patient's folder such as {sub}"
                        if sub else "; choose the folder that holds one patient's T1, T1ce, T2 and FLAIR")
            else:
                hint = "; choose the T1, T1ce, T2 and FLAIR of one patient"
            raise StudyError(f"No MRI images were found in {where} ({_FORMATS}){hint}.")
        found = [f"{display_name(m)} {by_modality[m][0].label}" for m in MODALITIES if m in by_modality]
        parts = [("found " + ", ".join(found)) if found else "no image name says its modality"]
        if unknown:
            parts.append("names not recognised: " + ", ".join(
                c.label + (f" ({c.how})" if c.series_files is not None else "") for c in unknown))
        shown = [display_name(m) for m in missing]
        names = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]
        example = " / ".join({"t1": "case_t1.nii.gz", "t1ce": "case_t1ce.nii.gz", "t2": "case_t2.nii.gz",
                              "flair": "case_flair.nii.gz"}[m] for m in missing)
        raise StudyError(
            f"The study in {where} has no {names} image ({'; '.join(parts)}); add "
            f"{'it' if len(missing) == 1 else 'them'}, or rename the file{'s' if len(missing) > 1 else ''} "
            f"so the name says the modality (for example {example})."
        )
    for cand in unknown:
        if cand.series_files is not None:
            notes.append(f"The DICOM series {cand.label} was ignored: neither its folder name nor its "
                         f"{cand.how} says which modality it is.")
        else:
            notes.append(f"{cand.label} was ignored: its name does not say which modality it is.")
    return {m: by_modality[m][0] for m in MODALITIES if m in by_modality}, notes


def _check_one_study(candidates: List[_Candidate], where: str) -> None:
    """DICOM series of several patients or studies in one place are listed, and the user chooses one."""
    studies: Dict[Tuple[str, str], List[_Candidate]] = {}
    for cand in candidates:
        if cand.series_files is not None:
            first = cand.series_files[0]
            key = (_dicom_tag(first, _PATIENT_ID) or "?", _dicom_tag(first, _STUDY_UID) or "?")
            studies.setdefault(key, []).append(cand)
    if len(studies) < 2:
        return
    listed = []
    for (patient, uid), cands in studies.items():
        date = _dicom_tag(cands[0].series_files[0], _STUDY_DATE)
        series = ", ".join(c.label for c in cands[:4]) + (f" and {len(cands) - 4} more" if len(cands) > 4 else "")
        listed.append(f"patient {patient}, study {date or uid[-12:]}: {series}")
    patients = len({patient for patient, _ in studies})
    what = f"{patients} patients" if patients > 1 else f"{len(studies)} studies of one patient"
    raise StudyError(f"{where[0].upper() + where[1:]} holds DICOM series of {what} ({'; '.join(listed)}); choose one "
                     "study: give the folder, or the series folders, of that study alone.")


def _check_one_frame(assigned: Dict[str, _Candidate], allow: bool, note: Callable[[str], None]) -> None:
    """DICOM series of one study whose FrameOfReferenceUIDs differ do not share scanner coordinates (the
    patient left the scanner between them, or one was made elsewhere), so overlaying them voxel for voxel is
    wrong: refused, unless the caller registers the sequences to each other (``allow``), which is noted."""
    frames = {m: _dicom_tag(c.series_files[0], _FRAME_OF_REFERENCE) for m, c in assigned.items()
              if c.series_files is not None}
    frames = {m: uid for m, uid in frames.items() if uid}
    if len(set(frames.values())) < 2:
        return
    reference = "t1ce" if "t1ce" in frames else next(iter(frames))
    others = [m for m, uid in frames.items() if uid != frames[reference]]
    names = " and ".join(f"{display_name(m)} ({assigned[m].label})" for m in others)
    what = (f"The DICOM series {names} {'has' if len(others) == 1 else 'have'} another frame of reference than the "
            f"{display_name(reference)} ({assigned[reference].label}): they were not acquired in one set of scanner "
            "coordinates")
    if allow:
        note(f"{what}; they are registered to the {display_name(reference)}.")
        return
    raise StudyError(f"{what}, so their voxels cannot be laid over each other; run with --coregister to register "
                     "them to the T1ce, or give series of one scanner session.")


def _first_subfolder_with_images(folder: Path) -> Optional[str]:
    try:
        for sub in sorted(folder.iterdir()):
            if sub.is_dir() and not sub.name.startswith("."):
                if any(p.is_file() and _is_image_file_name(p.name) for p in sub.iterdir()):
                    return sub.name
    except OSError:
        return None
    return None


def find_study_files(source, required: Sequence[str] = MODALITIES) -> Dict[str, Path]:
    """Which file (or DICOM series folder) is which modality, without reading any voxels.

    Raises the same :class:`StudyError` as :func:`load_study` for missing or duplicated modalities.
    """
    required = _normalise_required(required)
    candidates, _, where = _gather(source)
    folder = Path(source) if isinstance(source, (str, os.PathLike)) and Path(source).is_dir() else None
    assigned, _ = _assign(candidates, where, required, folder)
    return {m: c.path for m, c in assigned.items()}


def find_segmentation(folder) -> Optional[Path]:
    """The truth label map of a study folder (``..._seg.nii.gz``, ``-seg``, ``label``), or ``None``.

    Brain / skull masks are not label maps and are skipped. Two equally good candidates raise a
    :class:`StudyError` naming both.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise StudyError(f"The study folder {folder} does not exist; check the path and try again.")
    ranked = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_file() or not _is_image_file_name(entry.name):
            continue
        if not is_segmentation(entry.name):
            continue
        stem = entry.name.lower()
        words = set(re.split(r"[^a-z0-9]+", stem))
        if words & {"brain", "skull", "head", "bet", "brainmask", "headmask", "skullstrip"} or "brainmask" in stem:
            continue  # a brain / head mask, not a tumour label map
        if words & {"seg", "segmentation", "segm", "labels", "label", "labelmap", "gt", "truth", "groundtruth"}:
            rank = 0
        else:
            rank = 1
        ranked.append((rank, entry))
    if not ranked:
        return None
    best = min(r for r, _ in ranked)
    best_paths = [p for r, p in ranked if r == best]
    if len(best_paths) > 1:
        raise StudyError(
            f"{len(best_paths)} files in {folder} look like the segmentation: "
            f"{' and '.join(p.name for p in best_paths)}; keep only the expert label map there, or "
            f"choose it explicitly."
        )
    return best_paths[0]


# --------------------------------------------------------------------------------------------
# Geometry


def _bounds(image: sitk.Image) -> Tuple[np.ndarray, np.ndarray]:
    """Axis-aligned physical bounding box (mm) of the image's voxels, edges included."""
    size = image.GetSize()
    corners = []
    for i in (-0.5, size[0] - 0.5):
        for j in (-0.5, size[1] - 0.5):
            for k in (-0.5, size[2] - 0.5):
                corners.append(image.TransformContinuousIndexToPhysicalPoint((i, j, k)))
    corners = np.asarray(corners)
    return corners.min(axis=0), corners.max(axis=0)


def _fov_overlap(a: sitk.Image, b: sitk.Image) -> float:
    """Fraction of the smaller bounding box that lies inside the other one (0..1)."""
    lo_a, hi_a = _bounds(a)
    lo_b, hi_b = _bounds(b)
    inter = np.clip(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b), 0, None).prod()
    vol = min((hi_a - lo_a).prod(), (hi_b - lo_b).prod())
    return float(inter / vol) if vol > 0 else 0.0


def grid_differences(image: sitk.Image, ref: sitk.Image) -> List[str]:
    """What differs between two grids (empty when the same within tolerance)."""
    diffs = []
    if image.GetSize() != ref.GetSize():
        diffs.append("size " + "x".join(map(str, image.GetSize())) + " vs " + "x".join(map(str, ref.GetSize())))
    sp, rsp = np.asarray(image.GetSpacing()), np.asarray(ref.GetSpacing())
    if not np.allclose(sp, rsp, rtol=1e-3, atol=1e-5):
        diffs.append("spacing " + "x".join(f"{v:g}" for v in sp) + " mm vs " + "x".join(f"{v:g}" for v in rsp) + " mm")
    tol = 0.01 * float(min(rsp.min(), sp.min()))
    if not np.allclose(image.GetOrigin(), ref.GetOrigin(), rtol=0, atol=max(tol, 1e-4)):
        diffs.append("origin")
    if not np.allclose(image.GetDirection(), ref.GetDirection(), rtol=0, atol=1e-3):
        diffs.append("orientation")
    return diffs


# --------------------------------------------------------------------------------------------
# Loading a study


def load_study(source, required: Sequence[str] = MODALITIES, log: Optional[Callable[[str], None]] = None,
               other_frames_ok: bool = False) -> Study:
    """Load and validate one study.

    ``source`` is a study folder (image files named by modality, and/or subfolders holding DICOM
    series), a list/tuple of image files or DICOM series folders, or a mapping
    ``{modality: path}`` that says explicitly which is which. Every modality found is loaded;
    those in ``required`` must be present. ``log`` receives each note as it is made. DICOM series whose
    frames of reference differ are refused unless ``other_frames_ok`` (the caller registers them).

    Returns a :class:`Study` whose images are float32 and all on the T1ce grid.
    Raises :class:`StudyError` with one plain sentence for anything the user must fix.
    """
    required = _normalise_required(required)
    notes: List[str] = []

    def note(text: str) -> None:
        notes.append(text)
        if log is not None:
            log(text)

    candidates, ignored, where = _gather(source)
    _check_one_study(candidates, where)
    folder = Path(source).expanduser() if isinstance(source, (str, os.PathLike)) else None
    if folder is not None and not folder.is_dir():
        folder = None
    assigned, assign_notes = _assign(candidates, where, required, folder)
    for text in ignored + assign_notes:
        note(text)
    _check_one_frame(assigned, other_frames_ok, note)

    images: Dict[str, sitk.Image] = {}
    paths: Dict[str, Path] = {}
    failures: List[StudyError] = []
    for modality, cand in assigned.items():
        what = f"the {display_name(modality)} image"
        try:
            raw = _read_raw(cand.path, cand.series_files, what)
            image, extra = _as_volume(raw, f"The {display_name(modality)} image {cand.path}")
        except StudyError as exc:
            if modality in required:
                raise
            note(f"{display_name(modality)} was not loaded: {exc}")
            failures.append(exc)
            continue
        if extra:
            note(extra)
        if cand.series_files is not None:
            note(f"{display_name(modality)} was read from the DICOM series in {cand.path} "
                 f"(recognised by its {cand.how}).")
        images[modality] = image
        paths[modality] = cand.path

    if not images:
        if len(failures) == 1:  # the one image there was: its own sentence names it
            raise failures[0]
        raise StudyError(f"None of the images in {where} could be used; check the notes and files and try again.")
    ref_modality = "t1ce" if "t1ce" in images else next(m for m in MODALITIES if m in images)
    if ref_modality != "t1ce":
        note(f"There is no T1ce, so the {display_name(ref_modality)} grid is the reference for every output.")
    ref = images[ref_modality]
    ref_name = display_name(ref_modality)
    for modality in list(images):
        if modality == ref_modality:
            continue
        image = images[modality]
        diffs = grid_differences(image, ref)
        if not diffs:
            if (image.GetOrigin() != ref.GetOrigin() or image.GetSpacing() != ref.GetSpacing()
                    or image.GetDirection() != ref.GetDirection()):
                image.CopyInformation(ref)  # equal within rounding: make it exact
            continue
        overlap = _fov_overlap(image, ref)
        if overlap < MIN_FOV_OVERLAP:
            raise StudyError(
                f"The {display_name(modality)} image {paths[modality]} and the {ref_name} image "
                f"{paths[ref_modality]} cover different regions of space "
                f"({'only ' + format(overlap, '.0%') if overlap >= 0.01 else 'none'} of the smaller "
                f"field of view lies inside the other), so they are not the same anatomy in "
                f"the same scanner coordinates; register them to each other first (for example with "
                f"Slicer's General Registration (BRAINS)) or check that both belong to this patient "
                f"and session."
            )
        images[modality] = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        note(f"{display_name(modality)} was resampled onto the {ref_name} grid ({', '.join(diffs)} differed).")

    ordered = {m: images[m] for m in MODALITIES if m in images}
    return Study(
        images=ordered,
        paths={m: paths[m] for m in MODALITIES if m in paths},
        notes=notes,
        reference_modality=ref_modality,
    )
