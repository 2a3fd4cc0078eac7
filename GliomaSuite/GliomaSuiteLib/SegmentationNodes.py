"""Volumes and BraTS label maps as MRML nodes, and back.

The core package works on SimpleITK images and numpy arrays in ITK's LPS world; Slicer keeps volumes
and segmentations as MRML nodes in RAS. This module is the one place that converts between the two,
so geometry (origin, spacing, direction) survives every round trip.

Usage::

    t1ce_node = volume_node_from_image(scene, t1ce_image, "T1ce")
    segmentation_node = segmentation_node_from_labels(scene, labels_image, t1ce_node)
    save_segmentation(segmentation_node, "tumour.seg.nrrd")
    labels = labels_from_segmentation_node(segmentation_node, t1ce_node)   # after user edits

Numpy arrays use SimpleITK's (k, j, i) axis order (slice, row, column), the same order as
``SimpleITK.GetArrayFromImage`` and Slicer's ``slicer.util.arrayFromVolume``.
"""

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import vtk
from vtkmodules.util import numpy_support

import slicer
from gliomasuite.errors import GliomaSuiteError
from gliomasuite.labels import ANATOMIC_REGION_CODE, BACKGROUND, CATEGORY_CODE, SEGMENT_CODES, SUBREGIONS

# ITK physical space is LPS, Slicer's world is RAS: the two differ by flipping the first two axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# Geometry that differs by less than this (mm, or unitless for direction cosines) is the same grid;
# NIfTI and NRRD headers round-trip through float32, so exact equality is too strict.
GEOMETRY_TOLERANCE = 1e-4

#: The segments' terminology: the codes every GliomaSuite output uses (:data:`gliomasuite.labels.SEGMENT_CODES`:
#: Necrosis, Edema, Enhancing Lesion; category Morphologically Abnormal Structure; region Brain). Slicer
#: shows them in the segment's terminology, and its DICOM SEG export writes them, so a SEG exported from
#: Slicer carries the same codes as the one ``gliomasuite report`` writes.
TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


def ijk_to_ras_from_image(image: sitk.Image) -> np.ndarray:
    """The 4x4 voxel-index-to-RAS matrix of a 3D SimpleITK image."""
    _require_3d_scalar(image, "image")
    direction = np.array(image.GetDirection()).reshape(3, 3)
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = direction * np.array(image.GetSpacing())
    ijk_to_lps[:3, 3] = image.GetOrigin()
    return LPS_TO_RAS @ ijk_to_lps


def ijk_to_ras_from_volume_node(volume_node) -> np.ndarray:
    """The 4x4 voxel-index-to-RAS matrix of a volume node (its own, parent transforms not applied)."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return _numpy_from_vtk_matrix(matrix)


def volume_node_from_image(scene, image: sitk.Image, name: str):
    """Add a 3D SimpleITK image to ``scene`` as a vtkMRMLScalarVolumeNode with the same geometry."""
    _require_3d_scalar(image, name)
    array = sitk.GetArrayViewFromImage(image)
    return volume_node_from_array(scene, array, ijk_to_ras_from_image(image), name)


def volume_node_from_array(scene, array: np.ndarray, ijk_to_ras: np.ndarray, name: str):
    """Add a (k, j, i) numpy array with a 4x4 IJK-to-RAS matrix to ``scene`` as a volume node.

    The voxels are copied, so the array may be changed or freed afterwards.
    """
    array = np.asarray(array)
    if array.ndim != 3:
        raise GliomaSuiteError(
            f"Volume '{name}' has {array.ndim} dimensions; only 3D scalar volumes can be shown, "
            "so pass one 3D volume (one MRI sequence) at a time.")
    volume_node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    volume_node.SetIJKToRASMatrix(_vtk_matrix_from_numpy(ijk_to_ras))
    volume_node.SetAndObserveImageData(_vtk_image_from_array(array))
    volume_node.CreateDefaultDisplayNodes()
    return volume_node


def image_from_volume_node(volume_node) -> sitk.Image:
    """A SimpleITK image (LPS geometry) with a copy of a scalar volume node's voxels."""
    image_data = volume_node.GetImageData()
    if image_data is None or image_data.GetNumberOfScalarComponents() != 1:
        raise GliomaSuiteError(
            f"Volume '{volume_node.GetName()}' has no voxels or is not a scalar volume; load a 3D "
            "MRI volume (one sequence) into that node first.")
    return image_on_volume_grid(_array_from_vtk_image(image_data), volume_node)


def read_result_image(path, advice: str) -> sitk.Image:
    """An image the core wrote, read for the scene; one that cannot be read (a run cut short, a file moved)
    becomes one sentence naming it, SimpleITK's reason and ``advice`` (what to do next)."""
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise GliomaSuiteError(f"{path} could not be read ({str(error).strip().splitlines()[-1]}); {advice}") from error


def image_on_volume_grid(array: np.ndarray, volume_node) -> sitk.Image:
    """A (z, y, x) array on a volume node's voxel grid (e.g. a label map drawn on it) as a SimpleITK
    image with that node's LPS geometry; the node's own voxels are not read."""
    image = sitk.GetImageFromArray(array)
    ijk_to_lps = LPS_TO_RAS @ ijk_to_ras_from_volume_node(volume_node)
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(ijk_to_lps[:3, 3].tolist())
    image.SetDirection((ijk_to_lps[:3, :3] / spacing).ravel().tolist())
    return image


def segmentation_node_from_labels(scene, labels, reference_volume_node, name: str = "Tumour"):
    """Add a BraTS label map (0/1/2/4) to ``scene`` as a segmentation with NCR, ED and ET segments.

    ``labels`` is a SimpleITK image on the reference volume's grid (usually the T1ce), or a (k, j, i)
    numpy array taken to be on that grid. Every sub-region gets a segment with its BraTS name, colour
    and standard terminology, even when the label map does not contain it (the segment is then empty,
    ready for the user to paint). Segment IDs are the short names ("NCR", "ED", "ET").

    All three segments share one binary-labelmap layer whose label values are the BraTS values, so a
    saved .seg.nrrd holds the BraTS label map as is.
    """
    label_array = _labels_on_reference_grid(labels, reference_volume_node)
    unknown = sorted(set(np.unique(label_array).tolist()) - {BACKGROUND} - {v for v, *_ in SUBREGIONS})
    if unknown:
        raise GliomaSuiteError(
            f"Label map for '{name}' contains values {unknown}, but BraTS sub-regions are 1 (NCR), "
            "2 (ED) and 4 (ET); relabel it first (BraTS 2023+ data use 3 for ET: map 3 to 4).")

    segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentation_node.CreateDefaultDisplayNodes()
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
    segmentation = segmentation_node.GetSegmentation()
    binary_labelmap = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    segmentation.SetSourceRepresentationName(binary_labelmap)

    shared_labelmap = _vtk_image_from_array(label_array.astype(np.uint8), slicer.vtkOrientedImageData)
    reference_ijk_to_ras = ijk_to_ras_from_volume_node(reference_volume_node)
    shared_labelmap.SetImageToWorldMatrix(_vtk_matrix_from_numpy(reference_ijk_to_ras))

    for value, short_name, display_name, colour in SUBREGIONS:
        segment = slicer.vtkSegment()
        segment.SetName(display_name)
        segment.SetNameAutoGenerated(False)
        segment.SetColor(*colour)
        segment.SetColorAutoGenerated(False)
        segment.SetTerminology(terminology_entry(short_name))
        segment.SetLabelValue(value)
        segment.AddRepresentation(binary_labelmap, shared_labelmap)
        segmentation.AddSegment(segment, short_name)
    return segmentation_node


def labels_from_segmentation_node(segmentation_node, reference_volume_node) -> np.ndarray:
    """The BraTS label map (uint8, (k, j, i)) of a segmentation, on the reference volume's grid.

    Segments are found by ID ("NCR", "ED", "ET"), or by display name if the user recreated one.
    Where segments overlap after editing, the inner region wins (ET over NCR over ED), matching the
    nesting ET inside TC inside WT. A deleted segment leaves its label absent.
    """
    shape = _grid_shape(reference_volume_node)
    segmentation = segmentation_node.GetSegmentation()
    subregions = {short_name: (value, display_name) for value, short_name, display_name, _ in SUBREGIONS}
    segment_ids, brats_values = [], []
    for short_name in ("ED", "NCR", "ET"):  # outer region first, so inner regions overwrite it
        value, display_name = subregions[short_name]
        segment_id = short_name if segmentation.GetSegment(short_name) else \
            segmentation.GetSegmentIdBySegmentName(display_name)
        if segment_id:
            segment_ids.append(segment_id)
            brats_values.append(value)
    if not segment_ids:
        return np.zeros(shape, dtype=np.uint8)

    ids = vtk.vtkStringArray()
    values = vtk.vtkIntArray()
    for segment_id, value in zip(segment_ids, brats_values):
        ids.InsertNextValue(segment_id)
        values.InsertNextValue(value)
    merged = slicer.vtkOrientedImageData()
    # Resamples each segment onto the reference grid (parent transforms applied), later ones on top.
    slicer.vtkSlicerSegmentationsModuleLogic.GenerateMergedLabelmapInReferenceGeometry(
        segmentation_node, reference_volume_node, ids, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY,
        merged, values)
    if merged.GetPointData().GetScalars() is None or merged.GetDimensions()[::-1] != shape:
        raise GliomaSuiteError(
            f"Segmentation '{segmentation_node.GetName()}' could not be resampled onto volume "
            f"'{reference_volume_node.GetName()}'; check that both are loaded and overlap in space.")
    return _array_from_vtk_image(merged).astype(np.uint8)


def save_segmentation(segmentation_node, path) -> Path:
    """Write a segmentation node to a .seg.nrrd file through its storage node; returns the path.

    The file keeps the full reference grid (not cropped to the tumour), so it lines up voxel for
    voxel with the T1ce it was made on.
    """
    path = Path(path)
    if not path.name.endswith(".seg.nrrd"):
        raise GliomaSuiteError(
            f"'{path}' does not end in .seg.nrrd; Slicer segmentations are saved as .seg.nrrd files.")
    storage_node = segmentation_node.GetStorageNode()
    if storage_node is None:
        segmentation_node.AddDefaultStorageNode()
        storage_node = segmentation_node.GetStorageNode()
    storage_node.SetCropToMinimumExtent(False)
    storage_node.SetFileName(str(path))
    if not storage_node.WriteData(segmentation_node):
        raise GliomaSuiteError(
            f"Could not write segmentation '{segmentation_node.GetName()}' to '{path}'; check that the "
            "folder exists and is writable, and that the disk is not full.")
    return path


def terminology_entry(short_name: str) -> str:
    """Slicer's serialized terminology entry (standard codes) for the sub-region NCR, ED or ET."""
    category, type_code, region = CATEGORY_CODE, SEGMENT_CODES[short_name], ANATOMIC_REGION_CODE
    return slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(  # (value, scheme, meaning) each
        TERMINOLOGY_CONTEXT, *category, *type_code, "", "", "", ANATOMIC_CONTEXT, *region, "", "", "")


def _labels_on_reference_grid(labels, reference_volume_node) -> np.ndarray:
    """The label map as a (k, j, i) array, after checking it lies on the reference volume's grid."""
    reference_name = reference_volume_node.GetName()
    reference_shape = _grid_shape(reference_volume_node)
    if isinstance(labels, sitk.Image):
        _require_3d_scalar(labels, "label map")
        same_grid = np.allclose(ijk_to_ras_from_image(labels),
                                ijk_to_ras_from_volume_node(reference_volume_node), atol=GEOMETRY_TOLERANCE)
        array = sitk.GetArrayViewFromImage(labels)
        if not same_grid or array.shape != reference_shape:
            raise GliomaSuiteError(
                f"The label map is not on the grid of volume '{reference_name}' (different size, "
                "spacing, origin or direction); resample it onto that volume with nearest-neighbour "
                "interpolation first.")
        return array
    array = np.asarray(labels)
    if array.shape != reference_shape:
        raise GliomaSuiteError(
            f"The label map array has shape {array.shape} but volume '{reference_name}' has "
            f"{reference_shape} (k, j, i); pass a label map computed on that volume's grid.")
    return array


def _grid_shape(volume_node) -> tuple:
    """(k, j, i) voxel counts of a volume node, which must hold an image."""
    if volume_node is None or volume_node.GetImageData() is None:
        raise GliomaSuiteError(
            "The reference volume is missing or empty; select the loaded T1ce (or the volume the "
            "segmentation was made on) as reference.")
    return tuple(volume_node.GetImageData().GetDimensions()[::-1])


def _require_3d_scalar(image: sitk.Image, what: str) -> None:
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise GliomaSuiteError(
            f"The {what} is {image.GetDimension()}D with {image.GetNumberOfComponentsPerPixel()} "
            "component(s) per voxel; only 3D scalar volumes can be used, so pass one MRI sequence at a time.")


def _vtk_image_from_array(array: np.ndarray, image_class=vtk.vtkImageData):
    image_data = image_class()
    image_data.SetDimensions(array.shape[::-1])
    # vtkImageData is x-fastest, which is C order of a (k, j, i) array: flatten without reordering.
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True)
    image_data.GetPointData().SetScalars(scalars)
    return image_data


def _array_from_vtk_image(image_data) -> np.ndarray:
    dimensions = image_data.GetDimensions()
    scalars = numpy_support.vtk_to_numpy(image_data.GetPointData().GetScalars())
    return scalars.reshape(dimensions[::-1]).copy()


def _vtk_matrix_from_numpy(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(array[row, column]))
    return matrix


def _numpy_from_vtk_matrix(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def colour_table(scene, name: str, colour):
    """One user colour table of 256 entries named ``name`` in ``scene`` (made once; slicer-core ships no
    colour files). ``colour(t)`` gives (r, g, b) for t in 0..1."""
    existing = scene.GetFirstNodeByName(name)
    if existing is not None:
        return existing
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    table.SetTypeToUser()
    table.SetNumberOfColors(256)
    for i in range(256):
        t = i / 255.0
        table.SetColor(i, f"{t:.2f}", *colour(t), 1.0)
    return table


def show_in_slice_views(scene, node, show: bool = True, opacity: float = 0.5) -> None:
    """Overlay ``node`` on every slice view (foreground), or take any foreground off."""
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for index in range(composites.GetNumberOfItems()):
        composite = composites.GetItemAsObject(index)
        composite.SetForegroundVolumeID(node.GetID() if show and node is not None else None)
        composite.SetForegroundOpacity(opacity if show else 0.0)
