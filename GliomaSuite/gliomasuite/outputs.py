"""Writing results: atomically (a temporary name in the same folder, then a rename, so a failure or a
cancel never leaves a half-written file) and stamped with what made them.

Every image and JSON file GliomaSuite writes names the package version and the model that made it:
JSON files carry ``gliomasuite_version`` (:func:`gliomasuite.registry.provenance`), NRRD and
MetaImage files a ``gliomasuite`` header field, and NIfTI files their 80-character ``descrip``
header field, which ITK's writer leaves empty, so it is set in the written header (NIfTI-1 puts it at
byte 148) before compressing (level 1: 0.15 s for a 240x240x155 float32 volume against 0.7 s at
level 6, for 5 % more bytes).
"""

import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from . import __version__

#: Offset and length of ``descrip`` in the NIfTI-1 header (nifti1.h).
NIFTI_DESCRIP_OFFSET, NIFTI_DESCRIP_LENGTH = 148, 80


def stamp(model: Optional[str] = None) -> str:
    """The text written into image headers: ``gliomasuite 0.1.0 vnet-brats-ensemble-v1``."""
    return " ".join(filter(None, (f"gliomasuite {__version__}", model)))


def _temporary(path: Path, suffix: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".partial-", suffix=suffix, dir=path.parent)
    os.close(fd)
    return tmp


def publish(tmp: str, path: Path) -> None:
    """Give a finished temporary file the usual permissions (mkstemp makes it 0600) and move it in place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def write_image_atomically(image, path, model: Optional[str] = None) -> None:
    """Write a SimpleITK image to ``path`` (format from its suffix), stamped with :func:`stamp`."""
    import SimpleITK as sitk

    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else (path.suffix or ".nii.gz")
    text = stamp(model)
    nifti = suffix in (".nii", ".nii.gz")
    tmp = _temporary(path, ".nii" if nifti else suffix)
    try:
        if nifti:
            sitk.WriteImage(image, tmp, False)
            with open(tmp, "r+b") as f:
                f.seek(NIFTI_DESCRIP_OFFSET)
                f.write(text.encode("ascii", "replace")[:NIFTI_DESCRIP_LENGTH - 1].ljust(NIFTI_DESCRIP_LENGTH, b"\0"))
            if suffix == ".nii.gz":
                packed = _temporary(path, suffix)
                with open(tmp, "rb") as src, gzip.open(packed, "wb", compresslevel=1) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                os.replace(packed, tmp)
        else:
            image = sitk.Image(image)  # a shallow copy: the caller's metadata stays as it was
            image.SetMetaData("gliomasuite", text)
            sitk.WriteImage(image, tmp, True)
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomically(data: dict, path, indent: Optional[int] = 2) -> None:
    """Write ``data`` as JSON (no NaN), with ``gliomasuite_version`` first unless it is there already."""
    path = Path(path)
    data = {"gliomasuite_version": __version__, **data}
    tmp = _temporary(path, ".json")
    try:
        with open(tmp, "w") as handle:
            json.dump(data, handle, indent=indent, allow_nan=False)
            handle.write("\n")
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_stamp(path) -> str:
    """The stamp written by :func:`write_image_atomically` ('' if none): for tests and provenance checks."""
    import SimpleITK as sitk

    path = Path(path)
    if path.name.endswith((".nii", ".nii.gz")):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as f:
            header = f.read(NIFTI_DESCRIP_OFFSET + NIFTI_DESCRIP_LENGTH)
        return header[NIFTI_DESCRIP_OFFSET:].split(b"\0")[0].decode("ascii", "replace")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader.GetMetaData("gliomasuite") if reader.HasMetaDataKey("gliomasuite") else ""
