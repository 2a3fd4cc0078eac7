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
from typing import Callable, Optional

from . import __version__
from .errors import GliomaSuiteError

#: Offset and length of ``descrip`` in the NIfTI-1 header (nifti1.h).
NIFTI_DESCRIP_OFFSET, NIFTI_DESCRIP_LENGTH = 148, 80


#: File names SimpleITK writes images to (``.nii.gz`` first: the suffix of a name is its last two parts).
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def check_output_file(path, overwrite: bool = False, image: bool = False, inputs=()) -> Path:
    """Refuse, before any work, an output the command could not write or must not: a folder, an
    unknown image format, an existing file without ``overwrite``, one of the ``inputs``, a path under a
    file, or a place that cannot be written. Returns the path. Nothing is created."""
    text = str(path)
    path = Path(path)
    if text.endswith(("/", os.sep)) or path.is_dir():
        raise GliomaSuiteError(f"{text} is a folder; give a file name inside it (for example "
                               f"{path / ('seg.nii.gz' if image else 'result.json')}).")
    if image and not path.name.lower().endswith(IMAGE_SUFFIXES):
        raise GliomaSuiteError(f"{path} has no image file extension GliomaSuite can write; end the name with one of "
                               f"{', '.join(IMAGE_SUFFIXES)}.")
    resolved = path.resolve()
    for source in inputs:
        if Path(source).resolve() == resolved:
            raise GliomaSuiteError(f"{path} is one of the input images; choose another output name (an input is "
                                   "never overwritten, even with --overwrite).")
    if path.exists() and not overwrite:
        raise GliomaSuiteError(f"{path} already exists; choose another output name or pass --overwrite"
                               + (" (an edited segmentation is never replaced silently)." if image else "."))
    _check_writable_place(path, resolved.parent, "written")
    return path


def check_output_folder(path) -> Path:
    """Refuse, before any work, an output folder that could not be made or filled: a file in its place
    or above it, or a place that cannot be written. Nothing is created. (Whether an existing folder may
    be replaced is each command's rule.)"""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise GliomaSuiteError(f"{path} is a file; give the name of a folder for the results.")
    _check_writable_place(path, path.resolve(), "made")
    return path


def _check_writable_place(path: Path, start: Path, verb: str) -> None:
    """The nearest existing folder at or above ``start`` must be a folder we can write in (``path`` is
    what the messages name; ``verb`` says what could not be done to it when a file is in the way)."""
    ancestor = start
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise GliomaSuiteError(f"{path} cannot be {verb}: {ancestor} is a file, not a folder; choose an output "
                               "in a folder.")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as exc:
        raise GliomaSuiteError(f"{path} cannot be written ({exc.strerror or exc} in {ancestor}); choose a folder you "
                               "can write to.") from None


def make_parents(path: Path) -> list:
    """Make ``path``'s missing parent folders; return those it made, deepest first, for
    :func:`remove_made` to take away again when the command fails."""
    made, parent = [], Path(path).parent
    while not parent.exists():
        made.append(parent)
        parent = parent.parent
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return made


def remove_made(folders) -> None:
    """Remove the folders :func:`make_parents` made, if they are still empty (nothing left behind)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): leave it
            continue


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


_COMMITTED = False


_COMMITTING = False


def committed() -> bool:
    """True once a command's :class:`OutputSet` is being moved into place or is there: a cancel from then
    on is not acted on (the moves are quick and finish; there is nothing left to undo)."""
    return _COMMITTED or _COMMITTING


def begin_command() -> None:
    """A new command starts: nothing of it is in place yet."""
    global _COMMITTED, _COMMITTING
    _COMMITTED = _COMMITTING = False


class OutputSet:
    """A command's output files, written under temporary names in their own folders and moved into place
    together by :meth:`commit`, or all removed by :meth:`discard` (and on leaving a ``with`` block by an
    exception, a cancel included): the results appear all at once or not at all. A cancel that arrives
    while they are moved is not acted on (:func:`committed`), so it lands before them (nothing written)
    or after (all written)."""

    def __init__(self, *paths):
        """``paths``: the outputs to come; their missing folders are made now and removed by :meth:`discard`."""
        self._staged = []
        self._made = []
        for path in paths:
            self._made += make_parents(Path(path))

    def add(self, tmp: str, path) -> None:
        self._staged.append((tmp, Path(path)))

    def commit(self) -> None:
        global _COMMITTED, _COMMITTING
        _COMMITTING = True  # the command's cancel handler lets the moves finish (see committed())
        try:
            for tmp, path in self._staged:
                publish(tmp, path)
            self._staged = []
            _COMMITTED = True
        finally:
            _COMMITTING = False

    def discard(self) -> None:
        for tmp, _ in self._staged:
            if os.path.exists(tmp):
                os.remove(tmp)
        self._staged = []
        remove_made(sorted(set(self._made), key=lambda p: -len(p.parts)))
        self._made = []

    def __enter__(self):
        return self

    def __exit__(self, kind, value, trace):
        if kind is not None:
            self.discard()
        return False


def write_image_atomically(image, path, model: Optional[str] = None, stage: Optional[OutputSet] = None) -> None:
    """Write a SimpleITK image to ``path`` (format from its suffix), stamped with :func:`stamp`; with
    ``stage``, leave it under its temporary name for ``stage.commit()`` to move into place."""
    import SimpleITK as sitk

    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else (path.suffix or ".nii.gz")
    text = stamp(model)
    nifti = suffix in (".nii", ".nii.gz")

    def write(tmp: str) -> None:
        if not nifti:
            stamped = sitk.Image(image)  # a shallow copy: the caller's metadata stays as it was
            stamped.SetMetaData("gliomasuite", text)
            sitk.WriteImage(stamped, tmp, True)
            return
        sitk.WriteImage(image, tmp, False)
        with open(tmp, "r+b") as f:
            f.seek(NIFTI_DESCRIP_OFFSET)
            f.write(text.encode("ascii", "replace")[:NIFTI_DESCRIP_LENGTH - 1].ljust(NIFTI_DESCRIP_LENGTH, b"\0"))
        if suffix == ".nii.gz":
            packed = _temporary(path, suffix)
            try:
                with open(tmp, "rb") as src, gzip.open(packed, "wb", compresslevel=1) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                os.replace(packed, tmp)
            finally:
                if os.path.exists(packed):  # cancelled while compressing
                    os.remove(packed)

    write_file_atomically(write, path, ".nii" if nifti else suffix, stage)


def write_json_atomically(data: dict, path, indent: Optional[int] = 2, stage: Optional[OutputSet] = None) -> None:
    """Write ``data`` as JSON (no NaN), with ``gliomasuite_version`` first unless it is there already; with
    ``stage``, leave it under its temporary name for ``stage.commit()``."""
    data = {"gliomasuite_version": __version__, **data}

    def write(tmp):
        with open(tmp, "w") as handle:
            json.dump(data, handle, indent=indent, allow_nan=False)
            handle.write("\n")

    write_file_atomically(write, path, ".json", stage)


def write_file_atomically(write: Callable[[str], None], path, suffix: str, stage: Optional[OutputSet] = None) -> None:
    """``write(tmp)`` fills a temporary file beside ``path``, which is then moved into place (with ``stage``:
    left for ``stage.commit()``); on any error or cancel the temporary file is removed."""
    path = Path(path)
    tmp = _temporary(path, suffix)
    kept = False
    try:
        write(tmp)
        if stage is None:
            publish(tmp, path)
        else:
            stage.add(tmp, path)
            kept = True
    finally:
        if not kept and os.path.exists(tmp):
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
