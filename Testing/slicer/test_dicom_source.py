"""Volumes loaded from Slicer's DICOM database: Export report gives back a DICOM SEG and SR of the scene's
segmentation, and a segmentation made on them is filed so that Slicer's own DICOM export offers it.

The study is a real labelled BraTS case written as a real DICOM MR study (the core DICOM tests' writer,
``Testing/core/test_dicom_export.py``), with the T1ce on an oblique grid. slicer-core has no DICOM
module, so two small stand-ins do what Slicer's does, and only that: the database answers
``fileForInstance(uid)`` as ``ctkDICOMDatabase`` does, and the loader loads a series the way Slicer's
DICOM scalar-volume plugin does (Slicer's Volumes logic reading the series' file list, the node attribute
``DICOM.instanceUIDs``, and patient / study / series items in the subject hierarchy). Everything of ours
is the real code: the Segment tab's result loading, ReportLogic, and the core's ``gliomasuite report``
run as a background process. The SEG and SR are read back by highdicom and dcmqi and checked by
dciodvfy, as in the core tests.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
pydicom = pytest.importorskip("pydicom", reason="pydicom is not installed (the gliomasuite[dicom] extra)")
pytest.importorskip("highdicom", reason="highdicom is not installed (the gliomasuite[dicom] extra)")

from test_dicom_export import MODALITY_NAMES, check_all, make_dicom_study  # noqa: E402
from test_segment_tab import erase_upper_half  # noqa: E402

from gliomasuite.labels import SEGMENT_CODES  # noqa: E402
from gliomasuite.report import dicom  # noqa: E402
from GliomaSuiteLib import image_on_volume_grid, labels_from_segmentation_node  # noqa: E402
from GliomaSuiteLib.DicomSource import (  # noqa: E402
    INSTANCE_UIDS_ATTRIBUTE,
    REFERENCED_INSTANCE_UIDS_ATTRIBUTE,
)
from GliomaSuiteLib.Process import DONE  # noqa: E402
from GliomaSuiteLib.ReportLogic import ReportLogic  # noqa: E402
from GliomaSuiteLib.SegmentLogic import SegmentLogic  # noqa: E402

pytestmark = pytest.mark.realdata
RUN_TIMEOUT_S = 240
DICOM_UID = "DICOM"  # vtkMRMLSubjectHierarchyConstants::GetDICOMUIDName()


class DicomDatabaseStandIn:
    """What GliomaSuite asks of Slicer's ``ctkDICOMDatabase``: the file of a SOP Instance UID ("" if unknown)."""

    def __init__(self, folder: Path):
        self.files = {}
        for path in sorted(Path(folder).rglob("*.dcm")):
            self.files[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = str(path)

    def fileForInstance(self, uid: str) -> str:
        return self.files.get(uid, "")


def load_series_as_slicers_dicom_module_does(mrml, folder: Path, name: str):
    """One series loaded the way Slicer's DICOMScalarVolumePlugin loads it: the files in slice order read by
    the Volumes logic as one archetype, their instance UIDs on the node, the node filed under its patient
    and study in the subject hierarchy. Returns the volume node."""
    import vtk

    headers = [(pydicom.dcmread(p, stop_before_pixels=True), str(p)) for p in sorted(folder.glob("*.dcm"))]
    first = headers[0][0]
    normal = np.cross(np.asarray(first.ImageOrientationPatient[:3], float),
                      np.asarray(first.ImageOrientationPatient[3:], float))
    headers.sort(key=lambda pair: float(np.dot(normal, np.asarray(pair[0].ImagePositionPatient, float))))
    files = vtk.vtkStringArray()
    for _, path in headers:
        files.InsertNextValue(path)
    node = mrml.logic("Volumes").AddArchetypeVolume(headers[0][1], name, 0, files)
    assert node is not None, f"Slicer could not load the series in {folder}"
    node.SetAttribute(INSTANCE_UIDS_ATTRIBUTE, " ".join(str(ds.SOPInstanceUID) for ds, _ in headers))

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml.scene)
    patient = hierarchy.GetItemChildWithName(hierarchy.GetSceneItemID(), str(first.PatientName))
    if not patient:
        patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), str(first.PatientName))
        hierarchy.SetItemUID(patient, DICOM_UID, str(first.PatientID))
    study = hierarchy.GetItemChildWithName(patient, str(first.StudyDescription))
    if not study:
        study = hierarchy.CreateStudyItem(patient, str(first.StudyDescription))
        hierarchy.SetItemUID(study, DICOM_UID, str(first.StudyInstanceUID))
    series = hierarchy.CreateItem(study, node)
    hierarchy.SetItemUID(series, DICOM_UID, str(first.SeriesInstanceUID))
    return node


@pytest.fixture(scope="module")
def dicom_study(tmp_path_factory):
    return make_dicom_study(tmp_path_factory.mktemp("dicom") / "study", oblique=True)


@pytest.fixture
def scene_study(mrml, dicom_study):
    """The study's four series in the scene as Slicer's DICOM module loads them, its database, and the
    expert label map as the Segment tab loads a result on the T1ce."""
    folder = dicom_study["folder"]
    volumes = {m: load_series_as_slicers_dicom_module_does(mrml, folder / f"series{number}", f"{name} series")
               for number, (m, name) in enumerate(MODALITY_NAMES.items(), start=1)}
    grid = image_on_volume_grid(np.zeros(volumes["t1ce"].GetImageData().GetDimensions()[::-1], np.uint8),
                                volumes["t1ce"])
    labels = sitk.Resample(dicom_study["labels"], grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    segmentation = SegmentLogic(mrml.scene, mrml.app_logic).loadResult(labels, volumes["t1ce"])
    return volumes, segmentation, DicomDatabaseStandIn(folder)


def test_a_segmentation_made_on_dicom_volumes_is_filed_for_slicers_dicom_export(mrml, scene_study):
    volumes, segmentation, database = scene_study
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml.scene)
    item = hierarchy.GetItemByDataNode(segmentation)
    # What Slicer's DICOM SEG exporter (QuantitativeReporting's DICOMSegmentationPlugin) requires before it
    # offers the segmentation: its item names the instances it was drawn on, each in the database ...
    referenced = hierarchy.GetItemAttribute(item, REFERENCED_INSTANCE_UIDS_ATTRIBUTE).split()
    assert referenced == volumes["t1ce"].GetAttribute(INSTANCE_UIDS_ATTRIBUTE).split()
    assert referenced and all(database.fileForInstance(uid) != "" for uid in referenced)
    # ... and it sits in the study of those images, so "Export to DICOM" on the study includes it.
    study = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(volumes["t1ce"]))
    assert hierarchy.GetItemParent(item) == study
    assert hierarchy.GetItemUID(study, DICOM_UID) == dicom_uid_of(database, referenced[0], "StudyInstanceUID")
    # The exporter writes each segment's terminology as its codes: ours are the standard ones.
    for short, (code, scheme, _meaning) in SEGMENT_CODES.items():
        entry = segmentation.GetSegmentation().GetSegment(short).GetTerminology()
        assert f"{scheme}^{code}^" in entry and "SCT^49755003^" in entry and "SCT^12738006^" in entry, entry


def test_a_segmentation_on_volumes_not_from_dicom_is_left_where_it_was(mrml, dicom_study, tmp_path):
    t1ce = sitk.ReadImage([str(p) for p in sorted((dicom_study["folder"] / "series2").glob("*.dcm"))])
    sitk.WriteImage(t1ce, str(tmp_path / "t1ce.nrrd"))
    node = mrml.logic("Volumes").AddArchetypeVolume(str(tmp_path / "t1ce.nrrd"), "t1ce", 0)
    labels = sitk.Resample(dicom_study["labels"], t1ce, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    segmentation = SegmentLogic(mrml.scene, mrml.app_logic).loadResult(labels, node)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml.scene)
    item = hierarchy.GetItemByDataNode(segmentation)  # the T1ce written as NRRD: not from DICOM, left alone
    assert not item or (hierarchy.GetItemAttribute(item, REFERENCED_INSTANCE_UIDS_ATTRIBUTE) == ""
                        and hierarchy.GetItemParent(item) == hierarchy.GetSceneItemID())


def dicom_uid_of(database, instance_uid: str, attribute: str) -> str:
    return str(getattr(pydicom.dcmread(database.fileForInstance(instance_uid), stop_before_pixels=True), attribute))


def test_export_report_gives_back_a_seg_and_sr_of_the_corrected_segmentation(mrml, scene_study, tmp_path):
    volumes, segmentation, database = scene_study
    erase_upper_half(segmentation, "ED", 2, volumes["t1ce"])  # a reader's correction
    corrected = image_on_volume_grid(labels_from_segmentation_node(segmentation, volumes["t1ce"]), volumes["t1ce"])

    logic = ReportLogic(mrml.scene)
    out = tmp_path / "report"
    logic.startReport(volumes, segmentation, out, dicomDatabase=database)
    outcome = logic.waitForCompletion(timeout=RUN_TIMEOUT_S)
    assert outcome.state == DONE, outcome.errorMessage
    assert outcome.files["dicom_seg"] == str(out / "report-seg.dcm"), outcome.notes
    t1ce_files = [database.fileForInstance(uid) for uid in volumes["t1ce"].GetAttribute(INSTANCE_UIDS_ATTRIBUTE).split()]
    source = dicom.read_series(t1ce_files)  # the database's own files: the SEG must reference these instances
    # A segmentation from the scene names no GliomaSuite model, so it is stored as MANUAL (no algorithm).
    check_all(out / "report-seg.dcm", out / "report-sr.dcm", corrected, source, tmp_path, algorithm="")
    seg = pydicom.dcmread(out / "report-seg.dcm")
    referenced = {ref.ReferencedSOPInstanceUID for series in seg.ReferencedSeriesSequence
                  for ref in series.ReferencedInstanceSequence}
    assert referenced == set(volumes["t1ce"].GetAttribute(INSTANCE_UIDS_ATTRIBUTE).split())


def test_a_dicom_volume_whose_files_are_gone_is_reported_from_the_scene_and_says_so(mrml, scene_study, tmp_path):
    volumes, segmentation, database = scene_study
    uids = volumes["t1ce"].GetAttribute(INSTANCE_UIDS_ATTRIBUTE).split()
    database.files.pop(uids[3])  # removed from the database
    logic = ReportLogic(mrml.scene)
    out = tmp_path / "report"
    logic.startReport({"t1ce": volumes["t1ce"], "flair": volumes["flair"]}, segmentation, out, dicomDatabase=database)
    outcome = logic.waitForCompletion(timeout=RUN_TIMEOUT_S)
    assert outcome.state == DONE, outcome.errorMessage
    assert "dicom_seg" not in outcome.files and not list(out.glob("*.dcm"))
    assert any(f"1 of the {len(uids)} DICOM files of 'T1ce series'" in note and "no DICOM SEG or SR" in note
               for note in outcome.notes), outcome.notes
    assert (out / "report.pdf").is_file()
