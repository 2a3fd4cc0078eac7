"""DICOM SEG and TID 1500 SR export (:mod:`gliomasuite.report.dicom`), checked by independent readers.

A real labelled BraTS case is written as a real DICOM MR study (four series, MR Image Storage, one
study and frame of reference, resampled to 2 mm to stay quick): once with every series axial, once
with the T1ce on an oblique grid (rotated 15 degrees about a tilted axis; the other series stay
axial and the loader resamples them onto it). The expert label map (put on the T1ce grid) and the
shipped model's segmentation (``gliomasuite segment --dicom-seg``) are exported and read back:

* ``dciodvfy`` (Debian dicom3tools) reports no error in the SEG or the SR (its warnings are printed);
* highdicom reads the SEG back voxel for voxel, segment by segment, and the SR's volumes;
* dcmqi (``segimage2itkimage``, ``tid1500reader``, from PyPI) reads the SEG back voxel for voxel on
  the T1ce grid and the SR's volumes number for number.

Each independent check skips with its reason when its tool is missing.
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pydicom = pytest.importorskip("pydicom", reason="pydicom is not installed (the gliomasuite[dicom] extra)")
hd = pytest.importorskip("highdicom", reason="highdicom is not installed (the gliomasuite[dicom] extra)")

from gliomasuite import cli  # noqa: E402
from gliomasuite.labels import SUBREGIONS, volumes_cm3  # noqa: E402
from gliomasuite.report import dicom  # noqa: E402
from gliomasuite.study import load_study  # noqa: E402

pytestmark = pytest.mark.realdata

CASE = "BraTS2021_00006"
MODALITY_NAMES = {"t1": "T1", "t1ce": "T1ce", "t2": "T2", "flair": "FLAIR"}
LABELS = {"NCR": 1, "ED": 2, "ET": 4}
BRATS_COLOURS = {short: colour for _, short, _, colour in SUBREGIONS}
PATIENT = {"PatientName": "TEST^GLIOMA", "PatientID": "GS-00006", "PatientBirthDate": "19600101",
           "PatientSex": "F"}
SPACING_MM = 2.0
OBLIQUE_DEGREES = 15.0
OBLIQUE_AXIS = (1.0, 0.5, 0.2)
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def data_root() -> Path:
    root = os.environ.get("GLIOMASUITE_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("GLIOMASUITE_DATA is not set (the real data in ../shared/data)")
    return Path(root)


def run_cli(*args):
    """``gliomasuite --json-progress ARGS`` in this process: (exit status, result or error event, notes)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["--json-progress", *map(str, args)])
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    last = lines[-1] if lines else {}
    notes = [line.get("message", "") for line in lines if line.get("event") == "note"]
    return code, (last.get("result", last) if last.get("event") == "done" else last), notes


# ----------------------------------------------------------------------------------------------
# a real DICOM MR study from a labelled BraTS case


def rotation(axis, degrees) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    angle = np.deg2rad(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def grid_like(image: sitk.Image, spacing: float, degrees: float = 0.0) -> sitk.Image:
    """An empty grid covering ``image`` at ``spacing`` mm, rotated by ``degrees`` about its centre."""
    size = [int(round(n * s / spacing)) for n, s in zip(image.GetSize(), image.GetSpacing())]
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    if degrees:
        direction = rotation(OBLIQUE_AXIS, degrees) @ direction
    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))
    origin = centre - direction @ (np.asarray([(n - 1) / 2 for n in size]) * spacing)
    grid = sitk.Image(size, sitk.sitkUInt8)
    grid.SetSpacing([spacing] * 3)
    grid.SetDirection(tuple(direction.ravel()))
    grid.SetOrigin(tuple(origin))
    return grid


def ds_number(value: float) -> str:
    """A decimal string of at most 16 characters (DICOM DS)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("-0", "") else "0"


def write_series(image: sitk.Image, folder: Path, description: str, series_number: int, study_uid: str,
                 frame_uid: str) -> Path:
    """One MR Image Storage series of single-frame slices, with the full image plane module."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    values = np.clip(np.rint(sitk.GetArrayFromImage(image)), 0, 65535).astype(np.uint16)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    orientation = [ds_number(v) for v in (*direction[:, 0], *direction[:, 1])]
    series_uid = generate_uid()
    spacing = image.GetSpacing()
    for k in range(values.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MR_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
        ds.SpecificCharacterSet = "ISO_IR 100"
        for key, value in PATIENT.items():
            setattr(ds, key, value)
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study_uid, "20240110", "093000"
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "ST-6", "ACC6", ""
        ds.StudyDescription = "MR brain"
        ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "MR", series_uid, series_number
        ds.SeriesDescription, ds.ProtocolName = description, description
        ds.SeriesDate, ds.SeriesTime = "20240110", "093000"
        ds.PatientPosition, ds.BodyPartExamined = "HFS", "BRAIN"
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
        ds.Manufacturer, ds.InstitutionName = "TestScanner", "Test hospital"
        ds.InstanceNumber = k + 1
        ds.ContentDate, ds.ContentTime = "20240110", "093000"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ImagePositionPatient = [ds_number(v) for v in image.TransformIndexToPhysicalPoint((0, 0, k))]
        ds.ImageOrientationPatient = orientation
        ds.PixelSpacing = [ds_number(spacing[1]), ds_number(spacing[0])]
        ds.SliceThickness = ds_number(spacing[2])
        ds.SpacingBetweenSlices = ds_number(spacing[2])
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
        ds.MRAcquisitionType, ds.RepetitionTime, ds.EchoTime = "3D", "500", "10"
        ds.EchoTrainLength, ds.MagneticFieldStrength, ds.ImagedNucleus = 1, "3", "1H"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = values.shape[1], values.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = values[k].tobytes()
        if int(pydicom.__version__.split(".")[0]) >= 3:
            ds.save_as(folder / f"IM{k + 1:04d}.dcm", enforce_file_format=True)
        else:  # pydicom 2
            ds.is_little_endian, ds.is_implicit_VR = True, False
            ds.save_as(folder / f"IM{k + 1:04d}.dcm", write_like_original=False)
    return folder


def make_dicom_study(folder: Path, oblique: bool) -> dict:
    """The BraTS case as a DICOM study in ``folder`` (series in neutral folder names, recognised by their
    SeriesDescription): the T1ce oblique if asked. Returns the folder and the expert labels on the T1ce grid."""
    from pydicom.uid import generate_uid

    case = data_root() / "brats" / CASE
    if not case.is_dir():
        pytest.skip(f"{case} is not in GLIOMASUITE_DATA")
    images = {m: sitk.ReadImage(str(case / f"{CASE}_{m}.nii.gz"), sitk.sitkFloat32) for m in MODALITY_NAMES}
    truth = sitk.ReadImage(str(case / f"{CASE}_seg.nii.gz"), sitk.sitkUInt8)
    axial = grid_like(images["t1ce"], SPACING_MM)
    study_uid, frame_uid = generate_uid(), generate_uid()
    for number, (modality, name) in enumerate(MODALITY_NAMES.items(), start=1):
        grid = grid_like(images["t1ce"], SPACING_MM, OBLIQUE_DEGREES) if oblique and modality == "t1ce" else axial
        resampled = sitk.Resample(images[modality], grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        write_series(resampled, folder / f"series{number}", name, number, study_uid, frame_uid)
    reference = grid_like(images["t1ce"], SPACING_MM, OBLIQUE_DEGREES if oblique else 0.0)
    labels = sitk.Resample(truth, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return {"folder": folder, "labels": labels, "study_uid": study_uid, "frame_uid": frame_uid}


def loaded_study(tmp_path_factory, kind: str) -> dict:
    made = make_dicom_study(tmp_path_factory.mktemp(kind) / "study", kind == "oblique")
    loaded = load_study(made["folder"])
    made["study"], made["kind"] = loaded, kind
    # The label map on the grid the study was loaded on (DICOM DS rounding: equal within tolerance).
    made["labels"].CopyInformation(loaded.reference)
    return made


@pytest.fixture(scope="module")
def axial_study(tmp_path_factory):
    return loaded_study(tmp_path_factory, "axial")


@pytest.fixture(scope="module")
def oblique_study(tmp_path_factory):
    return loaded_study(tmp_path_factory, "oblique")


@pytest.fixture(params=["axial", "oblique"])
def study(request):
    """Each test that takes it runs on both studies: all axial, and with an oblique T1ce."""
    return request.getfixturevalue(f"{request.param}_study")


# ----------------------------------------------------------------------------------------------
# the independent checks


def dciodvfy(path: Path) -> list:
    """dciodvfy's warnings for ``path``; fails on any error it reports."""
    if not shutil.which("dciodvfy"):
        pytest.skip("dciodvfy is not installed (apt-get install dicom3tools)")
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, encoding="utf-8", errors="replace")
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line for line in lines if line.startswith("Warning")]
    print(f"dciodvfy {path.name}: {len(errors)} errors, {len(warnings)} warnings")
    for line in warnings:
        print("   ", line)
    assert not errors, "\n".join(errors)
    return warnings


def dcmqi(tool: str) -> str:
    found = shutil.which(tool) or shutil.which(str(Path(os.sys.executable).parent / tool))
    if not found:
        pytest.skip(f"dcmqi's {tool} is not installed (pip install dcmqi)")
    return found


def orientation_matrix(ds) -> np.ndarray:
    row, col = np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float)
    return np.column_stack([row, col, np.cross(row, col)])


def expected_masks(labels: sitk.Image) -> dict:
    array = sitk.GetArrayFromImage(labels)
    return {short: array == value for short, value in LABELS.items() if (array == value).any()}


def check_seg_highdicom(path: Path, labels: sitk.Image, source: list, algorithm: str = "GliomaSuite expert-test"
                        ) -> None:
    """highdicom reads the SEG back: codes, geometry and each segment voxel for voxel."""
    seg = hd.seg.segread(str(path))
    first = source[0]
    assert seg.SeriesDescription == dicom.SEG_SERIES_DESCRIPTION
    assert seg.StudyInstanceUID == first.StudyInstanceUID and seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert seg.SeriesInstanceUID != first.SeriesInstanceUID
    assert (seg.PatientName, seg.PatientID, seg.PatientBirthDate) == (first.PatientName, first.PatientID,
                                                                       first.PatientBirthDate)
    assert seg.SegmentationType == "BINARY"
    masks = expected_masks(labels)
    described = {str(s.TrackingID): s for s in seg.SegmentSequence}
    assert sorted(described) == sorted(masks)
    codes = {short: prop for _, short, prop in dicom.SEGMENTS}
    for short, segment in described.items():
        prop = segment.SegmentedPropertyTypeCodeSequence[0]
        assert (prop.CodeValue, prop.CodingSchemeDesignator, prop.CodeMeaning) == codes[short]
        category = segment.SegmentedPropertyCategoryCodeSequence[0]
        assert (category.CodeValue, category.CodingSchemeDesignator) == ("49755003", "SCT")
        region = segment.AnatomicRegionSequence[0]
        assert (region.CodeValue, region.CodingSchemeDesignator) == ("12738006", "SCT")
        assert list(segment.RecommendedDisplayCIELabValue) == dicom.cielab_value(BRATS_COLOURS[short])
        if algorithm:  # made by a GliomaSuite model
            assert segment.SegmentAlgorithmType == "AUTOMATIC" and segment.SegmentAlgorithmName == algorithm
        else:  # a label map made elsewhere: no algorithm named
            assert segment.SegmentAlgorithmType == "MANUAL" and "SegmentAlgorithmName" not in segment
    # Every frame references its source image, and only images of the source series.
    sources = {ds.SOPInstanceUID for ds in source}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        refs = frame.DerivationImageSequence[0].SourceImageSequence
        assert len(refs) == 1 and refs[0].ReferencedSOPInstanceUID in sources
    # Segment by segment, per source image (the T1ce's slices in order).
    uids = [ds.SOPInstanceUID for ds in source]
    for short, segment in described.items():
        number = int(segment.SegmentNumber)
        got = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[number],
                                                 ignore_spatial_locations=False, assert_missing_frames_are_empty=True)
        np.testing.assert_array_equal(got[..., 0].astype(bool), masks[short], err_msg=short)


def check_seg_dcmqi(path: Path, labels: sitk.Image, tmp: Path) -> None:
    """dcmqi's segimage2itkimage reads the SEG back: each segment voxel for voxel on the T1ce grid."""
    tool = dcmqi("segimage2itkimage")
    out = tmp / "dcmqi-seg"
    out.mkdir()
    done = subprocess.run([tool, "--inputDICOM", str(path), "--outputDirectory", str(out), "-t", "nrrd"],
                          capture_output=True, encoding="utf-8", errors="replace")
    assert done.returncode == 0, done.stdout + done.stderr
    meta = json.loads((out / "meta.json").read_text())
    masks = expected_masks(labels)
    segments = [s for group in meta["segmentAttributes"] for s in group]
    assert sorted(s["TrackingIdentifier"] for s in segments) == sorted(masks)
    for s in segments:
        image = sitk.ReadImage(str(out / f"{s['labelID']}.nrrd"))
        # dcmqi writes the frames' extent; the voxels must lie on the T1ce lattice, then are put on its grid.
        index = np.asarray(labels.TransformPhysicalPointToContinuousIndex(image.GetOrigin()))
        assert np.abs(index - np.rint(index)).max() < 0.01, index
        assert np.allclose(image.GetDirection(), labels.GetDirection(), atol=1e-4)
        assert np.allclose(image.GetSpacing(), labels.GetSpacing(), rtol=1e-4)
        on_grid = sitk.Resample(image, labels, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        assert int(np.count_nonzero(sitk.GetArrayViewFromImage(image))) == int(masks[s["TrackingIdentifier"]].sum())
        np.testing.assert_array_equal(sitk.GetArrayFromImage(on_grid) > 0, masks[s["TrackingIdentifier"]],
                                      err_msg=s["TrackingIdentifier"])


def sr_volumes_highdicom(path: Path) -> dict:
    sr = hd.sr.srread(str(path))
    assert sr.SeriesDescription == dicom.SR_SERIES_DESCRIPTION
    report = sr.content
    volumes = {}
    for group in report.get_volumetric_roi_measurement_groups():
        short = group.tracking_identifier.split()[0]
        (volume,) = group.get_measurements(name=hd.sr.CodedConcept("118565006", "SCT", "Volume"))
        assert volume.unit.value == "cm3" and volume.unit.scheme_designator == "UCUM"
        assert group.referenced_segment is not None
        volumes[short] = (float(volume.value), group.referenced_segment.referenced_segment_numbers[0]
                          if hasattr(group.referenced_segment, "referenced_segment_numbers") else None)
    return volumes


def check_sr(path: Path, seg_path: Path, labels: sitk.Image, tmp: Path) -> None:
    """The SR's volumes, read by highdicom and by dcmqi's tid1500reader, are the label map's."""
    expected = {k: v for k, v in volumes_cm3(sitk.GetArrayViewFromImage(labels), labels.GetSpacing()).items()
                if k in LABELS and v > 0}
    seg = hd.seg.segread(str(seg_path))
    numbers = {str(s.TrackingID): int(s.SegmentNumber) for s in seg.SegmentSequence}
    got = sr_volumes_highdicom(path)
    assert sorted(got) == sorted(expected)
    for short, (value, number) in got.items():
        assert value == pytest.approx(expected[short], rel=1e-6), short
        if number is not None:
            assert number == numbers[short]
    sr = pydicom.dcmread(str(path))
    assert sr.StudyInstanceUID == seg.StudyInstanceUID and sr.PatientID == seg.PatientID

    tool = dcmqi("tid1500reader")
    out = tmp / "dcmqi-sr.json"
    done = subprocess.run([tool, "--inputDICOM", str(path), "--outputMetadata", str(out)], capture_output=True,
                          encoding="utf-8", errors="replace")
    assert done.returncode == 0, done.stdout + done.stderr
    meta = json.loads(out.read_text())
    read = {}
    for group in meta["Measurements"]:
        assert group["segmentationSOPInstanceUID"] == seg.SOPInstanceUID
        assert group["ReferencedSegment"] == numbers[group["TrackingIdentifier"].split()[0]]
        # (a time point order, a NUM item too, is listed there as well)
        (item,) = [m for m in group["measurementItems"] if m["quantity"]["CodeValue"] == "118565006"]
        assert item["units"]["CodeValue"] == "cm3" and item["units"]["CodingSchemeDesignator"] == "UCUM"
        read[group["TrackingIdentifier"].split()[0]] = float(item["value"])
    assert sorted(read) == sorted(expected)
    for short, value in read.items():
        assert value == pytest.approx(expected[short], rel=1e-6), short


def check_all(seg_path: Path, sr_path: Path, labels: sitk.Image, source: list, tmp: Path,
              algorithm: str = "GliomaSuite expert-test") -> None:
    check_seg_highdicom(seg_path, labels, source, algorithm)
    check_sr(sr_path, seg_path, labels, tmp)
    check_seg_dcmqi(seg_path, labels, tmp)
    dciodvfy(seg_path)
    dciodvfy(sr_path)


# ----------------------------------------------------------------------------------------------
# the tests


def test_the_expert_label_map_as_seg_and_sr(study, tmp_path):
    source = dicom.source_series(study["study"])
    assert source is not None and len(source) == study["labels"].GetSize()[2]
    axial = pydicom.dcmread(sorted((study["folder"] / "series1").iterdir())[0])  # the T1, always axial
    turn = orientation_matrix(source[0]).T @ orientation_matrix(axial)
    angle = np.degrees(np.arccos(np.clip((np.trace(turn) - 1) / 2, -1, 1)))
    assert angle == pytest.approx(OBLIQUE_DEGREES if study["kind"] == "oblique" else 0.0, abs=0.01)
    dciodvfy(Path(source[0].filename))  # the source images are valid MR images themselves
    seg = dicom.write_dicom_seg(study["labels"], source, tmp_path / "seg.dcm", "expert-test", "1.0")
    volumes = dicom.label_volumes_cm3(study["labels"])
    dicom.write_dicom_sr(seg, source, volumes, tmp_path / "sr.dcm", model_name="expert-test", version="1.0")
    check_all(tmp_path / "seg.dcm", tmp_path / "sr.dcm", study["labels"], source, tmp_path)


def test_a_label_map_reoriented_to_lps_is_stored_on_the_source_grid(study, tmp_path):
    source = dicom.source_series(study["study"])
    lps = sitk.DICOMOrient(study["labels"], "LPS" if study["kind"] == "axial" else "RAS")
    dicom.write_dicom_seg(lps, source, tmp_path / "seg.dcm", "expert-test", "1.0")
    check_seg_highdicom(tmp_path / "seg.dcm", study["labels"], source)


def test_a_time_point_is_in_every_measurement_group(axial_study, tmp_path):
    source = dicom.source_series(axial_study["study"])
    seg = dicom.write_dicom_seg(axial_study["labels"], source, tmp_path / "seg.dcm", "expert-test", "1.0")
    dicom.write_dicom_sr(seg, source, dicom.label_volumes_cm3(axial_study["labels"]), tmp_path / "sr.dcm",
                         time_point="baseline", time_point_order=1)
    sr = hd.sr.srread(str(tmp_path / "sr.dcm"))
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(seg.SegmentSequence)
    for group in groups:
        items = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in group[0].ContentSequence}
        assert items["Time Point"].TextValue == "baseline"
        assert float(items["Time Point Order"].MeasuredValueSequence[0].NumericValue) == 1
    dciodvfy(tmp_path / "sr.dcm")
    check_sr(tmp_path / "sr.dcm", tmp_path / "seg.dcm", axial_study["labels"], tmp_path)  # still read by dcmqi


def test_dciodvfy_does_catch_a_broken_seg_and_sr(axial_study, tmp_path):
    """The validator is not silently passing everything: a SEG and an SR with a required attribute removed fail."""
    source = dicom.source_series(axial_study["study"])
    seg = dicom.write_dicom_seg(axial_study["labels"], source, tmp_path / "seg.dcm", "expert-test", "1.0")
    dicom.write_dicom_sr(seg, source, dicom.label_volumes_cm3(axial_study["labels"]), tmp_path / "sr.dcm")
    for name, attribute in (("seg.dcm", "ContentLabel"), ("sr.dcm", "CompletionFlag")):
        ds = pydicom.dcmread(tmp_path / name)
        delattr(ds, attribute)
        ds.save_as(tmp_path / f"broken-{name}")
        with pytest.raises(AssertionError, match=attribute):
            dciodvfy(tmp_path / f"broken-{name}")


def test_segment_writes_a_dicom_seg_of_its_label_map(study, tmp_path):
    seg_nii, seg_dcm = tmp_path / "labels.nii.gz", tmp_path / "seg.dcm"
    code, result, _ = run_cli("segment", study["folder"], "-o", seg_nii, "--dicom-seg", seg_dcm, "--device", "cpu")
    assert code == 0, result
    assert result["dicom_seg"] == str(seg_dcm)
    labels = sitk.ReadImage(str(seg_nii), sitk.sitkUInt8)
    labels.CopyInformation(study["study"].reference)
    source = dicom.source_series(study["study"])
    check_seg_highdicom(seg_dcm, labels, source, "GliomaSuite " + result["model"])
    check_seg_dcmqi(seg_dcm, labels, tmp_path)
    dciodvfy(seg_dcm)
    # The report of that (stamped) label map names the same model in its SEG, and its SR holds its volumes.
    code, written, _ = run_cli("report", study["folder"], "--seg", seg_nii, "-o", tmp_path / "report")
    assert code == 0, written
    report_seg, report_sr = Path(written["dicom_seg"]), Path(written["dicom_sr"])
    check_seg_highdicom(report_seg, labels, source, "GliomaSuite " + result["model"])
    check_sr(report_sr, report_seg, labels, tmp_path / "report")


def test_report_writes_seg_and_sr_for_a_dicom_study(oblique_study, tmp_path):
    label_file = tmp_path / "labels.nii.gz"
    sitk.WriteImage(oblique_study["labels"], str(label_file))
    out = tmp_path / "report"
    code, result, _ = run_cli("report", oblique_study["folder"], "--seg", label_file, "-o", out)
    assert code == 0, result
    assert (out / "report-seg.dcm").is_file() and (out / "report-sr.dcm").is_file()
    assert result["dicom_seg"] == str(out / "report-seg.dcm") and result["dicom_sr"] == str(out / "report-sr.dcm")
    source = dicom.source_series(oblique_study["study"])
    # An unstamped label map (the expert's) is stored as MANUAL: no algorithm is named for it.
    check_all(out / "report-seg.dcm", out / "report-sr.dcm", oblique_study["labels"], source, tmp_path,
              algorithm="")


# ----------------------------------------------------------------------------------------------
# refusals


@pytest.fixture(scope="module")
def nifti_study(tmp_path_factory):
    case = data_root() / "brats" / CASE
    folder = tmp_path_factory.mktemp("nifti") / "study"
    folder.mkdir()
    t1ce = sitk.ReadImage(str(case / f"{CASE}_t1ce.nii.gz"), sitk.sitkFloat32)
    grid = grid_like(t1ce, 3.0)
    for m in (*MODALITY_NAMES, "seg"):
        image = sitk.ReadImage(str(case / f"{CASE}_{m}.nii.gz"))
        method = sitk.sitkNearestNeighbor if m == "seg" else sitk.sitkLinear
        sitk.WriteImage(sitk.Resample(image, grid, sitk.Transform(), method, 0), str(folder / f"{CASE}_{m}.nii.gz"))
    return folder


def test_segment_refuses_dicom_seg_for_a_nifti_study_before_segmenting(nifti_study, tmp_path, monkeypatch):
    import gliomasuite.segmentation.inference as inference

    def no_segmentation(*a, **k):
        raise AssertionError("segmentation ran")

    monkeypatch.setattr(inference, "segment_study", no_segmentation)
    code, last, _ = run_cli("segment", nifti_study, "-o", tmp_path / "l.nii.gz", "--dicom-seg", tmp_path / "s.dcm")
    assert code == 2 and "DICOM" in last["message"] and "--dicom-seg" in last["message"], last
    assert not list(tmp_path.iterdir())


def test_segment_refuses_dicom_seg_without_highdicom_before_segmenting(axial_study, tmp_path, monkeypatch):
    import gliomasuite.segmentation.inference as inference

    monkeypatch.setattr(inference, "segment_study", lambda *a, **k: pytest.fail("segmentation ran"))
    monkeypatch.setattr(dicom, "dicom_unavailable", lambda: "Writing DICOM SEG and SR needs highdicom (test).")
    code, last, _ = run_cli("segment", axial_study["folder"], "-o", tmp_path / "l.nii.gz", "--dicom-seg",
                            tmp_path / "s.dcm")
    assert code == 2 and "highdicom" in last["message"], last
    assert not list(tmp_path.iterdir())


def test_segment_refuses_an_existing_dicom_seg_file(axial_study, tmp_path, monkeypatch):
    import gliomasuite.segmentation.inference as inference

    monkeypatch.setattr(inference, "segment_study", lambda *a, **k: pytest.fail("segmentation ran"))
    (tmp_path / "s.dcm").write_bytes(b"x")
    code, last, _ = run_cli("segment", axial_study["folder"], "-o", tmp_path / "l.nii.gz", "--dicom-seg",
                            tmp_path / "s.dcm")
    assert code == 2 and "already exists" in last["message"], last


def test_report_of_a_nifti_study_has_no_dicom(nifti_study, tmp_path):
    out = tmp_path / "report"
    code, result, _ = run_cli("report", nifti_study, "-o", out)
    assert code == 0, result
    assert not list(out.glob("*.dcm")) and "dicom_seg" not in result


def test_a_series_without_frame_of_reference_is_refused_before_segmenting(axial_study, tmp_path, monkeypatch):
    """A series a DICOM SEG cannot reference: segment refuses at once; report writes the rest and says why."""
    import gliomasuite.segmentation.inference as inference

    broken = tmp_path / "study"
    shutil.copytree(axial_study["folder"], broken)
    for file in (broken / "series2").iterdir():  # the T1ce
        ds = pydicom.dcmread(file)
        del ds.FrameOfReferenceUID
        ds.save_as(file)
    monkeypatch.setattr(inference, "segment_study", lambda *a, **k: pytest.fail("segmentation ran"))
    code, last, _ = run_cli("segment", broken, "-o", tmp_path / "l.nii.gz", "--dicom-seg", tmp_path / "s.dcm")
    assert code == 2 and "FrameOfReferenceUID" in last["message"], last
    assert not (tmp_path / "l.nii.gz").exists() and not (tmp_path / "s.dcm").exists()
    monkeypatch.undo()
    label_file = tmp_path / "labels.nii.gz"
    sitk.WriteImage(axial_study["labels"], str(label_file))
    code, result, notes = run_cli("report", broken, "--seg", label_file, "-o", tmp_path / "report")
    assert code == 0, result
    assert "dicom_seg" not in result and not list((tmp_path / "report").glob("*.dcm"))
    assert any("No DICOM SEG or SR was written" in n and "FrameOfReferenceUID" in n for n in notes), notes


def test_a_deidentified_report_has_no_dicom(axial_study, tmp_path):
    label_file = tmp_path / "labels.nii.gz"
    sitk.WriteImage(axial_study["labels"], str(label_file))
    code, result, notes = run_cli("report", axial_study["folder"], "--seg", label_file, "--deidentify", "-o",
                                  tmp_path / "report")
    assert code == 0, result
    assert "dicom_seg" not in result and not list((tmp_path / "report").glob("*.dcm"))
    assert any("--deidentify" in n and "DICOM SEG" in n for n in notes), notes


def test_a_dicom_follow_up_writes_a_seg_and_an_sr_per_time_point(axial_study, tmp_path):
    """`gliomasuite followup` of two DICOM time points (the same study given twice, dated apart, the expert
    map as the reader's at both): each time point gets its own SEG on its own series and an SR whose groups
    carry the time point's name and order, valid for dciodvfy and read back by highdicom and dcmqi."""
    seg_file = tmp_path / "expert_seg.nii.gz"
    sitk.WriteImage(axial_study["labels"], str(seg_file))
    out = tmp_path / "followup"
    code, _, _ = run_cli("followup", axial_study["folder"], axial_study["folder"], "--seg", seg_file, seg_file,
                      "--names", "first", "second", "--dates", "2024-01-10", "2024-04-02", "--registration", "none",
                      "--labels", "brats2021", "--no-recurrence", "-o", out)
    assert code == 0
    result = json.loads((out / "followup.json").read_text())
    source = dicom.source_series(axial_study["study"])
    for order, (tp, name) in enumerate(zip(result["timepoints"], ("baseline", "second")), start=1):
        seg_path, sr_path = out / tp["files"]["dicom_seg"], out / tp["files"]["dicom_sr"]
        (tmp_path / tp["label"]).mkdir()
        check_all(seg_path, sr_path, axial_study["labels"], source, tmp_path / tp["label"], algorithm=None)
        for group in hd.sr.srread(str(sr_path)).content.get_volumetric_roi_measurement_groups():
            items = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in group[0].ContentSequence}
            assert items["Time Point"].TextValue == name
            assert float(items["Time Point Order"].MeasuredValueSequence[0].NumericValue) == order
