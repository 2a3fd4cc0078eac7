"""Volumes that came from Slicer's DICOM database, and what our results keep of them.

Slicer's DICOM scalar-volume loader marks every volume it loads with the SOP Instance UIDs of its
files (the node attribute ``DICOM.instanceUIDs``) and files it under its patient and study in the
subject hierarchy; ``slicer.dicomDatabase.fileForInstance(uid)`` gives each file back. Two things
follow from that, and both are done here:

* **Export report** can give the core the original DICOM series (not NRRD copies), so
  ``gliomasuite report`` writes the DICOM SEG and TID 1500 SR that reference them (see
  :mod:`gliomasuite.report.dicom`).
* **Slicer's own DICOM export** (Data module, "Export to DICOM...", whose segmentation exporter comes
  with the QuantitativeReporting extension) offers a segmentation as a DICOM SEG only when the
  segmentation's subject-hierarchy item names the instances it was drawn on
  (``DICOM.ReferencedInstanceUIDs``, each found in the database) and sits in their study. A segmentation
  GliomaSuite makes on DICOM-loaded volumes is linked that way; its segments already carry our
  terminology entries (:func:`.SegmentationNodes.terminology_entry`), which that exporter writes as the
  segments' codes.

MRML only (no Qt); the database is anything with ``fileForInstance(uid) -> str`` (Slicer's
``ctkDICOMDatabase``), passed in, so this runs on a bare scene too.
"""

import shutil
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import slicer

#: What Slicer's DICOM volume loader puts on a volume node: the SOP Instance UIDs of its files.
INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"
#: What Slicer's DICOM SEG exporter reads from a segmentation's subject-hierarchy item.
REFERENCED_INSTANCE_UIDS_ATTRIBUTE = "DICOM.ReferencedInstanceUIDs"


def instanceUIDs(volumeNode) -> List[str]:
    """The SOP Instance UIDs a volume was loaded from by Slicer's DICOM module ([] for any other volume)."""
    if volumeNode is None:
        return []
    return (volumeNode.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split()


def slicerDicomDatabase():
    """Slicer's DICOM database (``slicer.dicomDatabase``), or None where there is none (no DICOM module)."""
    return getattr(slicer, "dicomDatabase", None)


def sourceFiles(volumeNode, database) -> Tuple[Optional[List[str]], str]:
    """The DICOM files a volume was loaded from, in its instance order, and ``""``; or None and a sentence
    saying why they cannot be used (not from DICOM: an empty sentence; no database; files gone; moved)."""
    uids = instanceUIDs(volumeNode)
    if not uids:
        return None, ""
    name = volumeNode.GetName()
    if database is None:
        return None, f"'{name}' came from DICOM, but Slicer's DICOM database is not open."
    if volumeNode.GetParentTransformNode() is not None:
        return None, (f"'{name}' has been moved by a transform since it was loaded from DICOM, so its DICOM "
                      "files no longer describe it.")
    files = [database.fileForInstance(uid) or "" for uid in uids]
    missing = sum(1 for path in files if not path or not Path(path).is_file())
    if missing:
        return None, (f"{missing} of the {len(files)} DICOM files of '{name}' are no longer in Slicer's DICOM "
                      "database or on disk.")
    return files, ""


def dicomSeriesFolders(inputs: Dict[str, object], database, folder: Path) -> Tuple[Dict[str, Path], Dict[str, str]]:
    """For each input volume loaded from DICOM with its files at hand, a folder ``folder/<modality>`` holding
    (links to) its files, which the core reads as that modality's series; and notes on the volumes that came
    from DICOM but cannot be given as DICOM, by modality (the caller gives those as images)."""
    folders, notes = {}, {}
    for modality, node in inputs.items():
        if node is None:
            continue
        files, why = sourceFiles(node, database)
        if files is None:
            if why:
                notes[modality] = why
            continue
        series = Path(folder) / modality
        series.mkdir(parents=True)
        for index, path in enumerate(files):
            target = series / f"{index:05d}.dcm"
            try:
                target.symlink_to(Path(path).resolve())
            except OSError:  # no symbolic links here (Windows without the right): a copy instead
                shutil.copyfile(path, target)
        folders[modality] = series
    return folders, notes


def linkToDicomSource(segmentationNode, referenceVolumeNode) -> bool:
    """File ``segmentationNode`` the way Slicer's DICOM SEG exporter needs it when ``referenceVolumeNode``
    came from DICOM: its subject-hierarchy item names the reference's instances
    (``DICOM.ReferencedInstanceUIDs``) and sits in the reference's study. Returns whether it was linked
    (False for a reference not loaded from DICOM, which is left as it is)."""
    uids = instanceUIDs(referenceVolumeNode)
    if not uids or segmentationNode is None:
        return False
    scene = segmentationNode.GetScene()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    reference = hierarchy.GetItemByDataNode(referenceVolumeNode)
    study = hierarchy.GetItemParent(reference) if reference else hierarchy.GetSceneItemID()
    item = hierarchy.GetItemByDataNode(segmentationNode)
    if not item:  # (Slicer's subject hierarchy plugins file every new node; a bare scene does not)
        item = hierarchy.CreateItem(study, segmentationNode)
    hierarchy.SetItemAttribute(item, REFERENCED_INSTANCE_UIDS_ATTRIBUTE, " ".join(uids))
    if study != hierarchy.GetSceneItemID():
        hierarchy.SetItemParent(item, study)
    return True
