"""DICOM outputs of a study read from DICOM: a segmentation (DICOM SEG) and its volumes (TID 1500 SR).

Both are written with highdicom (the optional ``dicom`` extra: ``pip install gliomasuite[dicom]``)
and reference the study's own DICOM series, so a PACS or a viewer (3D Slicer, OHIF) shows them
over the images they were made from:

* :func:`write_dicom_seg`: a BINARY DICOM Segmentation with one segment per region present, NCR
  (Necrosis, SCT 6574001, label 1), ED (Edema, SCT 79654002, label 2) and ET (Enhancing Lesion,
  NCIt C113842, label 4), all in the category Morphologically Abnormal Structure (SCT 49755003),
  anatomic region Brain (SCT 12738006), in the BraTS colours, made by the named GliomaSuite model.
  It is on the source series' grid (the T1ce's, which every GliomaSuite output is on), one frame per
  source slice that holds the segment, each frame referencing its source image; its patient,
  study and frame of reference are the source's, its series is new.
* :func:`write_dicom_sr`: a Comprehensive 3D SR holding a TID 1500 Measurement Report: one
  volumetric ROI group per segment of the SEG, referencing it, with its volume in cm³
  (SCT 118565006, UCUM cm3), optionally at a time point (TID 1502 time point context).

:func:`source_series` finds and reads (pydicom) the DICOM files of a study's reference series, in
slice order, or says the study is not DICOM. Nothing here imports highdicom or pydicom before a
function that needs them is called, so the core package imports without them;
:func:`dicom_unavailable` says, in one sentence, when they are missing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from .. import __version__
from ..errors import GliomaSuiteError
from ..labels import ANATOMIC_REGION_CODE, CATEGORY_CODE, ED, ET, NCR, SEGMENT_CODES, SUBREGIONS
from ..modalities import display_name

__all__ = [
    "SEG_SERIES_DESCRIPTION",
    "SR_SERIES_DESCRIPTION",
    "SEGMENTS",
    "dicom_unavailable",
    "is_dicom_study",
    "source_series",
    "read_series",
    "build_dicom_seg",
    "write_dicom_seg",
    "write_dicom_sr",
    "label_volumes_cm3",
    "cielab_value",
    "write_report_dicom",
    "check_dicom_seg_request",
    "segment_dicom_seg",
    "save_dicom",
]

SEG_SERIES_DESCRIPTION = "GliomaSuite segmentation"
SR_SERIES_DESCRIPTION = "GliomaSuite measurements"
MANUFACTURER = "GliomaSuite"
#: Series numbers of what is written: the source series' number plus these (DICOM IS: at most 2^31 - 1).
SEG_SERIES_OFFSET, SR_SERIES_OFFSET = 1000, 1001
INSTALL_HINT = 'pip install "highdicom>=0.23" "pydicom>=2.4" (or the gliomasuite[dicom] extra)'

#: (label value, short name, segment label, segmented property type (value, scheme, meaning)).
SEGMENTS = tuple((value, short, SEGMENT_CODES[short]) for value, short in ((NCR, "NCR"), (ED, "ED"), (ET, "ET")))
VOLUME = ("118565006", "SCT", "Volume")
CUBIC_CENTIMETRE = ("cm3", "UCUM", "cubic centimeter")
IMAGING_PROCEDURE = ("363679005", "SCT", "Imaging procedure")
_NAMES = {value: name for value, _, name, _ in SUBREGIONS}
_COLOURS = {value: colour for value, _, _, colour in SUBREGIONS}


# ----------------------------------------------------------------------------------------------
# availability and the source series


def dicom_unavailable() -> Optional[str]:
    """``None`` when highdicom and pydicom can be imported, else a sentence saying what to install."""
    try:
        import highdicom  # noqa: F401
        import pydicom  # noqa: F401
    except ImportError as exc:
        return (f"Writing DICOM SEG and SR needs highdicom and pydicom, which are not installed ({exc.name} is "
                f"missing); install them with {INSTALL_HINT}.")
    return None


def _reference_path(study) -> Path:
    return Path(study.paths[study.reference_modality])


def is_dicom_study(study) -> bool:
    """Whether the study's reference image (its T1ce) was read from a DICOM series folder."""
    return _reference_path(study).is_dir()


def source_series(study) -> Optional[list]:
    """The pydicom datasets of the study's reference series (the T1ce's), in slice order, or ``None``
    when that image was not read from DICOM. Raises :class:`GliomaSuiteError` when the series found
    is not the one the study was loaded from (another number of slices or another grid)."""
    from ..study import grid_differences

    folder = _reference_path(study)
    if not folder.is_dir():
        return None
    datasets = read_series(_series_files(folder, study.reference_modality))
    _check_header(datasets[0], folder)
    diffs = grid_differences(_grid(datasets), study.reference)
    if diffs:
        raise GliomaSuiteError(
            f"The DICOM files in {folder} do not make up the {display_name(study.reference_modality)} image the "
            f"study was read from ({', '.join(diffs)} differ); load the study again from an unchanged folder.")
    return datasets


def _series_files(folder: Path, modality: str) -> tuple:
    """The files of the DICOM series of ``modality`` in ``folder`` (the one series there, else the one whose
    description names the modality)."""
    from ..study import _describe_dicom, _dicom_series

    series = _dicom_series(folder)
    if len(series) > 1:
        series = [s for s in series if _describe_dicom(folder, None, s[1], single=False)[0] == modality]
    if len(series) != 1:
        raise GliomaSuiteError(
            f"The {display_name(modality)} DICOM series in {folder} could not be told apart from the other series "
            "there; put each series in its own folder and try again.")
    return series[0][1]


#: What a DICOM SEG copies from, or references in, its source images.
REQUIRED_SOURCE_ATTRIBUTES = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
                              "FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient",
                              "PixelSpacing", "Rows", "Columns")


def _check_header(ds, folder) -> None:
    missing = [name for name in REQUIRED_SOURCE_ATTRIBUTES if not str(getattr(ds, name, "") or "").strip()]
    if missing:
        raise GliomaSuiteError(
            f"The DICOM series in {folder} has no {', '.join(missing)}, which a DICOM SEG must copy or reference, so "
            "no DICOM SEG can be made from it; export the series again from the scanner or PACS (with its full "
            "header).")


def read_series(files: Sequence) -> list:
    """Read DICOM files (pydicom) and sort them along the slice normal (all must share one orientation)."""
    import pydicom

    datasets = []
    for file in files:
        try:
            datasets.append(pydicom.dcmread(str(file)))
        except Exception as exc:  # pydicom raises several types for an unreadable file
            raise GliomaSuiteError(f"The DICOM file {file} could not be read ({exc}); export the series "
                                   "again.") from None
    if not datasets:
        raise GliomaSuiteError("No DICOM files were given to read.")
    for ds in datasets:
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds or "PixelSpacing" not in ds:
            raise GliomaSuiteError(
                f"The DICOM file {getattr(ds, 'filename', '?')} has no image position, orientation or pixel "
                "spacing, so a segmentation cannot be placed on it; use a series exported with its geometry.")
    return read_series_sorted(datasets)


def _grid(datasets: Sequence) -> sitk.Image:
    """An empty image with the geometry of a sorted series of single-frame images: index (i, j, k)
    is column i, row j of ``datasets[k]``; checks the slices are evenly spaced."""
    first = datasets[0]
    orientation = np.asarray(first.ImageOrientationPatient, float)
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    positions = np.asarray([np.asarray(ds.ImagePositionPatient, float) for ds in datasets])
    if len(datasets) > 1:
        dz = float(np.dot(positions[-1] - positions[0], normal)) / (len(datasets) - 1)
    else:
        dz = float(getattr(first, "SpacingBetweenSlices", None) or getattr(first, "SliceThickness", None) or 1.0)
    spacing_row, spacing_col = (float(v) for v in first.PixelSpacing)  # between rows, between columns
    image = sitk.Image([int(first.Columns), int(first.Rows), len(datasets)], sitk.sitkUInt8)
    image.SetSpacing((spacing_col, spacing_row, abs(dz) if dz else 1.0))
    image.SetOrigin(tuple(positions[0]))
    image.SetDirection(tuple(np.column_stack([row, col, normal]).ravel()))
    tolerance = 0.01 * min(spacing_row, spacing_col, abs(dz) or 1.0) + 1e-3
    for k, ds in enumerate(datasets):
        if (int(ds.Rows), int(ds.Columns)) != (int(first.Rows), int(first.Columns)):
            raise GliomaSuiteError("The DICOM series mixes image sizes; a segmentation needs one regular stack of "
                                   "slices.")
        expected = np.asarray(image.TransformIndexToPhysicalPoint((0, 0, k)))
        if np.abs(positions[k] - expected).max() > tolerance:
            raise GliomaSuiteError("The slices of the DICOM series are not evenly spaced (or one is missing), so the "
                                   "segmentation cannot be stored on their grid; export the complete series.")
    return image


def _on_grid(labels_image: sitk.Image, datasets: Sequence) -> np.ndarray:
    """The label map as a (slice, row, column) array matching ``datasets``; a map on the same voxels in
    another axis order (e.g. reoriented to LPS) is put back without interpolation."""
    from ..study import grid_differences

    grid = _grid(datasets)
    image = labels_image
    if grid_differences(image, grid):
        orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(grid.GetDirection())
        image = sitk.DICOMOrient(labels_image, orientation)
        diffs = grid_differences(image, grid)
        if diffs:
            raise GliomaSuiteError(
                f"The label map is not on the grid of the DICOM series it would be stored with ({', '.join(diffs)} "
                "differ); give the label map made from this study (GliomaSuite writes it on the T1ce's grid).")
    return sitk.GetArrayFromImage(image)


# ----------------------------------------------------------------------------------------------
# codes


def _code(triple):
    import highdicom as hd

    value, scheme, meaning = triple
    return hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _colour(rgb):
    """BraTS colour (RGB 0..1) as highdicom's CIELab colour, or None where this highdicom has no helper."""
    import highdicom as hd

    colour = getattr(getattr(hd, "color", None), "CIELabColor", None)
    if colour is None or not hasattr(colour, "from_rgb"):
        return None
    return colour.from_rgb(*(round(255 * c) for c in rgb))


def cielab_value(rgb) -> List[int]:
    """RecommendedDisplayCIELabValue of an sRGB colour (0..1): CIE L*a*b* (D65) scaled to 0..65535, as
    highdicom's ``CIELabColor.from_rgb`` computes it (used where that helper is missing, before 0.24)."""
    def linear(c):
        return ((c + 0.055) / 1.055) ** 2.4 if c > 0.04045 else c / 12.92

    r, g, b = (100 * linear(round(255 * c) / 255.0) for c in rgb)
    xyz = (r * 0.4124 + g * 0.3576 + b * 0.1805, r * 0.2126 + g * 0.7152 + b * 0.0722,
           r * 0.0193 + g * 0.1192 + b * 0.9505)

    def f(t):
        return t ** (1.0 / 3) if t >= 8.85645167903563082e-3 else (841.0 / 108.0) * t + 4.0 / 29.0

    fx, fy, fz = (f(v / w) for v, w in zip(xyz, (95.047, 100.0, 108.883)))
    lab = (116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz))
    return [int(round(lab[0] * 65535 / 100)), int(round((lab[1] + 128) * 65535 / 255)),
            int(round((lab[2] + 128) * 65535 / 255))]


def _algorithm(model_name: str, version: str):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.AlgorithmIdentificationSequence(name=_algorithm_name(model_name), version=str(version or __version__),
                                              family=codes.cid7162.ArtificialIntelligence)


def _algorithm_name(model_name: str) -> str:
    """``"GliomaSuite <model>"`` (a weights file by its file name), at most 64 characters (DICOM LO)."""
    if not model_name:
        return "GliomaSuite"
    name = str(model_name)
    if os.sep in name or "/" in name:
        name = Path(name).name
    return ("GliomaSuite " + name)[:64]


# ----------------------------------------------------------------------------------------------
# DICOM SEG


def label_volumes_cm3(labels_image: sitk.Image) -> Dict[str, float]:
    """NCR, ED, ET, TC and WT volumes (cm³) of a BraTS label map image, from voxel counts."""
    from ..labels import volumes_cm3

    return volumes_cm3(sitk.GetArrayViewFromImage(labels_image), labels_image.GetSpacing())


def build_dicom_seg(labels_image: sitk.Image, source_datasets: Sequence, model_name: str = "",
                    version: Optional[str] = None, algorithm_type: str = "AUTOMATIC"):
    """The DICOM SEG (a ``highdicom.seg.Segmentation``, not yet saved) of a BraTS label map on the grid of
    ``source_datasets`` (the source series' single-frame images; any order).

    ``algorithm_type`` ``"AUTOMATIC"`` (a GliomaSuite model, named ``"GliomaSuite " + model_name``, made the
    map) or ``"MANUAL"`` (a label map made elsewhere, e.g. an expert's: no algorithm is named)."""
    problem = dicom_unavailable()
    if problem:
        raise GliomaSuiteError(problem)
    import highdicom as hd

    for ds in list(source_datasets)[:1]:
        _check_header(ds, Path(str(getattr(ds, "filename", "") or "the source")).parent)
    datasets = read_series_sorted(source_datasets)
    array = _on_grid(labels_image, datasets)
    values = np.unique(array)
    unknown = sorted(set(values.tolist()) - {0, NCR, ED, ET})
    if unknown:
        raise GliomaSuiteError(f"The label map holds values {unknown} besides the BraTS labels 0, 1, 2 and 4; give a "
                               "BraTS label map.")
    present = [entry for entry in SEGMENTS if entry[0] in values]
    if not present:
        raise GliomaSuiteError("The label map holds no tumour (no NCR, ED or ET voxel), so there is no segment to "
                               "store in a DICOM SEG.")
    version = str(version or __version__)
    automatic = str(algorithm_type).upper() != "MANUAL"
    algorithm = _algorithm(model_name, version) if automatic else None
    pixels = np.zeros(array.shape, np.uint8)
    descriptions = []
    for number, (value, short, prop) in enumerate(present, start=1):
        pixels[array == value] = number
        colour = _colour(_COLOURS[value])
        description = hd.seg.SegmentDescription(
            segment_number=number, segment_label=_NAMES[value],
            segmented_property_category=_code(CATEGORY_CODE), segmented_property_type=_code(prop),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC if automatic else
            hd.seg.SegmentAlgorithmTypeValues.MANUAL, algorithm_identification=algorithm,
            tracking_uid=hd.UID(), tracking_id=short, anatomic_regions=[_code(ANATOMIC_REGION_CODE)],
            **({"display_color": colour} if colour is not None else {}))
        if colour is None:
            description.RecommendedDisplayCIELabValue = cielab_value(_COLOURS[value])
        descriptions.append(description)
    first = datasets[0]
    try:
        seg = _segmentation(hd, datasets, pixels, descriptions, first, model_name, version)
    except ValueError as exc:  # highdicom's word on source images it cannot reference
        raise GliomaSuiteError(f"No DICOM SEG can be made from this DICOM series: {exc}") from None
    seg.SeriesDescription = SEG_SERIES_DESCRIPTION
    return seg


def _segmentation(hd, datasets, pixels, descriptions, first, model_name: str, version: str):
    return hd.seg.Segmentation(
        source_images=datasets, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(),
        series_number=_series_number(first, SEG_SERIES_OFFSET), sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer=MANUFACTURER, manufacturer_model_name=_algorithm_name(model_name),
        software_versions=version, device_serial_number="0", content_label="GLIOMA",
        content_description=SEG_SERIES_DESCRIPTION, content_creator_name=None)


def read_series_sorted(datasets: Sequence) -> list:
    """``datasets`` sorted along their slice normal (as :func:`read_series` sorts files)."""
    datasets = list(datasets)
    if not datasets:
        raise GliomaSuiteError("No source DICOM images were given: the SEG must reference the series it was made from.")
    orientation = np.asarray(datasets[0].ImageOrientationPatient, float)
    if any(not np.allclose(np.asarray(ds.ImageOrientationPatient, float), orientation, atol=1e-4) for ds in datasets):
        raise GliomaSuiteError("The DICOM series mixes slice orientations; a segmentation needs one stack of "
                               "parallel slices.")
    normal = np.cross(orientation[:3], orientation[3:])
    return sorted(datasets, key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, float), normal)))


def _series_number(source, offset: int) -> int:
    try:
        number = int(source.SeriesNumber)
    except (AttributeError, TypeError, ValueError):
        number = 0
    return number + offset if 0 <= number + offset < 2 ** 31 else offset


def _save(dataset, path, stage=None) -> Path:
    """Save a dataset atomically (a temporary name beside ``path``, then a rename; with ``stage``, an
    :class:`gliomasuite.outputs.OutputSet`, the rename is left to its commit)."""
    from ..outputs import write_file_atomically

    path = Path(path)
    try:
        write_file_atomically(dataset.save_as, path, ".dcm", stage)
    except OSError as exc:
        raise GliomaSuiteError(f"{path} could not be written ({exc.strerror or exc}); choose a folder you can write "
                               "to.") from None
    return path


def write_dicom_seg(labels_image: sitk.Image, source_datasets: Sequence, path, model_name: str = "",
                    version: Optional[str] = None, algorithm_type: str = "AUTOMATIC"):
    """Write the DICOM SEG of a BraTS label map (see :func:`build_dicom_seg`) to ``path``; returns it."""
    seg = build_dicom_seg(labels_image, source_datasets, model_name, version, algorithm_type)
    _save(seg, path)
    return seg


# ----------------------------------------------------------------------------------------------
# TID 1500 SR


def write_dicom_sr(seg_dataset, source_datasets: Sequence, volumes_cm3: Mapping[str, float], path, *,
                   model_name: str = "", version: Optional[str] = None, time_point: Optional[str] = None,
                   time_point_order: Optional[int] = None):
    """Write a TID 1500 Measurement Report (Comprehensive 3D SR) of the segments of ``seg_dataset``.

    One volumetric ROI measurement group per segment, referencing it (and the source series), with the
    volume ``volumes_cm3[short name]`` (``NCR``, ``ED``, ``ET``) in cm³; ``time_point`` (e.g.
    ``"baseline"``) and ``time_point_order`` add the time point context to every group. Returns the SR.
    """
    problem = dicom_unavailable()
    if problem:
        raise GliomaSuiteError(problem)
    import highdicom as hd
    from pydicom.sr.codedict import codes

    by_type = {prop[0]: short for _, short, prop in SEGMENTS}
    source_series_uid = str(source_datasets[0].SeriesInstanceUID)
    version = str(version or __version__)
    algorithm = hd.sr.AlgorithmIdentification(name=_algorithm_name(model_name), version=version)
    context = (hd.sr.TimePointContext(time_point=str(time_point), time_point_order=time_point_order)
               if time_point else None)
    groups = []
    for segment in seg_dataset.SegmentSequence:
        prop = segment.SegmentedPropertyTypeCodeSequence[0]
        short = by_type.get(str(prop.CodeValue))
        if short is None or short not in volumes_cm3:
            raise GliomaSuiteError(f"Segment {segment.SegmentNumber} ({segment.SegmentLabel}) of the SEG has no volume "
                                   f"given; give volumes for {', '.join(s for _, s, _ in SEGMENTS)}.")
        referenced = hd.sr.ReferencedSegment(
            sop_class_uid=seg_dataset.SOPClassUID, sop_instance_uid=seg_dataset.SOPInstanceUID,
            segment_number=int(segment.SegmentNumber),
            source_series=hd.sr.SourceSeriesForSegmentation(source_series_uid))
        tracking = hd.sr.TrackingIdentifier(
            uid=str(getattr(segment, "TrackingUID", "") or hd.UID()),
            identifier=f"{short} {str(segment.SegmentLabel).lower()}")
        volume = hd.sr.Measurement(name=_code(VOLUME), value=float(volumes_cm3[short]), unit=_code(CUBIC_CENTIMETRE),
                                   algorithm_id=algorithm)
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking, referenced_segment=referenced, time_point_context=context,
            finding_type=hd.sr.CodedConcept(str(prop.CodeValue), str(prop.CodingSchemeDesignator),
                                            str(prop.CodeMeaning)),
            finding_category=_code(CATEGORY_CODE), algorithm_id=algorithm,
            finding_sites=[hd.sr.FindingSite(anatomic_location=_code(ANATOMIC_REGION_CODE))], measurements=[volume]))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=_algorithm_name(model_name), manufacturer_name=MANUFACTURER,
            model_name=_algorithm_name(model_name)))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=_code(IMAGING_PROCEDURE), imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[seg_dataset, *source_datasets], content=report[0], series_instance_uid=hd.UID(),
        series_number=_series_number(source_datasets[0], SR_SERIES_OFFSET), sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer=MANUFACTURER, is_complete=True)
    sr.SeriesDescription = SR_SERIES_DESCRIPTION
    _save(sr, path)
    return sr


def write_report_dicom(inputs, folder, *, deidentify: bool = False, note=lambda m: None,
                       seg_name: str = "report-seg.dcm", sr_name: str = "report-sr.dcm") -> Dict[str, str]:
    """The report's DICOM pair for a study read from DICOM: ``report-seg.dcm`` and ``report-sr.dcm`` in
    ``folder``, from the report's inputs (:class:`gliomasuite.report.content.ReportInputs`).

    Returns ``{"seg": path, "sr": path}``; ``{}`` for a study not read from DICOM, and ``{}`` with a note
    (the rest of the report is written as usual) with ``deidentify`` (both would carry the patient module
    of the source images), without highdicom, for a label map without tumour, or when the source series
    cannot carry a SEG. A label map stamped by GliomaSuite names its model (an AUTOMATIC segmentation);
    any other (an expert's, another program's) is stored as MANUAL, naming no algorithm.
    """
    study = inputs.study
    if not is_dicom_study(study):
        return {}
    skipped = "no DICOM SEG or SR was written (the rest of the report was)"
    if deidentify:
        note(f"With --deidentify {skipped}: they carry the patient's name and ID from the source DICOM images.")
        return {}
    problem = dicom_unavailable()
    if problem:
        note(f"{problem[:-1]}; {skipped}.")
        return {}
    labels = sitk.Resample(inputs.labels, study.reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                           sitk.sitkUInt8)  # back from LPS onto the T1ce grid: the same voxels, no interpolation
    if not np.any(sitk.GetArrayViewFromImage(labels)):
        note(f"The label map holds no tumour, so {skipped}.")
        return {}
    words = str(inputs.stamp or "").split()
    ours = len(words) >= 2 and words[0] == "gliomasuite"
    model, version = (" ".join(words[2:]), words[1]) if ours else ("", None)
    folder = Path(folder)
    try:
        write_seg_and_sr(labels, study, folder / seg_name, folder / sr_name, model, version, ours)
    except SEG_SR_FAILURES as exc:
        note(f"No DICOM SEG or SR was written (the rest of the report was): {exc}")
        return {}
    return {"seg": str(folder / seg_name), "sr": str(folder / sr_name)}


#: What writing a SEG and SR from a study's DICOM headers may raise for a series that cannot carry them.
SEG_SR_FAILURES = (GliomaSuiteError, ValueError, TypeError, AttributeError, KeyError, IndexError)


def write_seg_and_sr(labels: sitk.Image, study, seg_path: Path, sr_path: Path, model: str = "",
                     version: Optional[str] = None, automatic: bool = True, time_point: Optional[str] = None,
                     time_point_order: Optional[int] = None) -> None:
    """A DICOM SEG of ``labels`` on the study's T1ce series and the TID 1500 SR of its volumes, both or
    neither: on a failure (one of :data:`SEG_SR_FAILURES`, re-raised) what was written is removed.
    ``automatic``: made by a GliomaSuite model (named by ``model``); else MANUAL, naming no algorithm."""
    written = []
    try:
        datasets = source_series(study)
        seg = write_dicom_seg(labels, datasets, seg_path, model if automatic else "", version,
                              "AUTOMATIC" if automatic else "MANUAL")
        written.append(seg_path)
        write_dicom_sr(seg, datasets, label_volumes_cm3(labels), sr_path, model_name=model if automatic else "",
                       version=version, time_point=time_point, time_point_order=time_point_order)
        written.append(sr_path)
    except SEG_SR_FAILURES:
        for path in written:
            Path(path).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------------------------
# for `gliomasuite segment --dicom-seg FILE`


def check_dicom_seg_request(study_source, path) -> None:
    """Refuse ``--dicom-seg`` before any work: highdicom missing, a study whose reference image (the
    T1ce) is not a DICOM series, or an output inside a source series folder. Reads no voxels."""
    from ..study import find_study_files

    problem = dicom_unavailable()
    if problem:
        raise GliomaSuiteError(f"--dicom-seg cannot be used: {problem}")
    try:
        found = find_study_files(study_source, required=())
    except GliomaSuiteError:
        return  # the study itself is wrong: loading it says so, still before any segmentation
    reference = "t1ce" if "t1ce" in found else next(iter(found), None)
    if reference is None:
        return
    source = Path(found[reference])
    if not source.is_dir():
        raise GliomaSuiteError(
            f"--dicom-seg needs a study read from DICOM, but the {display_name(reference)} image {source} is not a "
            "DICOM series, and a DICOM SEG must reference the DICOM images it was made from; leave out --dicom-seg "
            "(the label map is written as usual), or give the study's DICOM series.")
    import pydicom

    files = _series_files(source, reference)
    try:
        header = pydicom.dcmread(str(files[0]), stop_before_pixels=True)
    except Exception as exc:  # pydicom raises several types for an unreadable file
        raise GliomaSuiteError(f"The DICOM file {files[0]} could not be read ({exc}); export the series "
                               "again.") from None
    _check_header(header, source)
    folders = {Path(p).resolve() for p in found.values() if Path(p).is_dir()}
    if Path(path).resolve().parent in folders:
        raise GliomaSuiteError(
            f"--dicom-seg {path} is inside a folder of the study's DICOM series, where it would be read as part of "
            "the study next time; write it to another folder.")


def segment_dicom_seg(study, labels_image: sitk.Image, model_name: str, note=lambda m: None):
    """The DICOM SEG of a segmentation of ``study`` (not yet saved), or ``None`` with a note when it
    holds no tumour (a DICOM SEG needs at least one segment)."""
    if not np.any(sitk.GetArrayViewFromImage(labels_image)):
        note("The segmentation holds no tumour, so no DICOM SEG was written (a DICOM SEG needs at least one "
             "segment); the label map was written as usual.")
        return None
    datasets = source_series(study)
    if datasets is None:
        raise GliomaSuiteError("--dicom-seg needs a study read from DICOM; leave it out for this study.")
    return build_dicom_seg(labels_image, datasets, model_name)


def save_dicom(dataset, path, stage=None) -> Path:
    """Save a SEG or SR dataset atomically to ``path`` (or into ``stage``, see :func:`_save`)."""
    return _save(dataset, path, stage)
