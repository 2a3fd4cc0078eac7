"""BraTS label maps become Slicer segmentations and come back unchanged (GliomaSuiteLib.SegmentationNodes).

The saved .seg.nrrd is checked with slicerio, a reader independent of Slicer, so a geometry or
label mistake cannot cancel itself out on the way back through the same code.
"""

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import slicerio
import vtk
from vtkmodules.util import numpy_support

from gliomasuite.errors import GliomaSuiteError
from gliomasuite.labels import ED, ET, NCR, SUBREGIONS
from GliomaSuiteLib import (
    image_from_volume_node,
    ijk_to_ras_from_volume_node,
    labels_from_segmentation_node,
    save_segmentation,
    segmentation_node_from_labels,
    volume_node_from_image,
)

EXPECTED_TYPE_CODES = {"NCR": ["SCT", "6574001"], "ED": ["SCT", "79654002"], "ET": ["NCIt", "C113842"]}  # issue 13

# An oblique, anisotropic grid away from the origin, so that any mix-up of axes, LPS/RAS signs,
# spacing or origin shows up in the voxels or the matrices.
SIZE = (48, 40, 26)  # i, j, k
SPACING = (0.9, 1.1, 2.0)
ORIGIN = (-12.5, 30.0, 7.25)
DIRECTION = sitk.Euler3DTransform((0, 0, 0), 0.3, -0.2, 0.5).GetMatrix()


def synthetic_study():
    """(T1ce image, BraTS label image) on the same grid: a nested tumour (NCR in ET in ED), with the
    anterior-superior quarter cut away so a 3D view from the front shows all three layers."""
    t1ce = sitk.Image(SIZE, sitk.sitkFloat32)
    t1ce.SetSpacing(SPACING)
    t1ce.SetOrigin(ORIGIN)
    t1ce.SetDirection(DIRECTION)

    k, j, i = np.indices(SIZE[::-1])
    ijk = np.stack([i, j, k], axis=-1).reshape(-1, 3).astype(float)
    direction = np.array(DIRECTION).reshape(3, 3)
    lps = ijk * SPACING @ direction.T + ORIGIN
    ras = (lps * [-1, -1, 1]).reshape(*SIZE[::-1], 3)
    centre = ras.reshape(-1, 3).mean(axis=0)
    distance = np.linalg.norm(ras - centre, axis=-1)
    cut_away = (ras[..., 1] > centre[1]) & (ras[..., 2] > centre[2])

    labels = np.zeros(SIZE[::-1], dtype=np.uint8)
    labels[distance < 14] = ED
    labels[distance < 9] = ET
    labels[distance < 5] = NCR
    labels[cut_away] = 0

    t1ce_array = (100 + 300 * (labels == ET) + 50 * (labels == ED)).astype(np.float32)
    t1ce = sitk.GetImageFromArray(t1ce_array)
    t1ce.SetSpacing(SPACING)
    t1ce.SetOrigin(ORIGIN)
    t1ce.SetDirection(DIRECTION)
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(t1ce)
    return t1ce, label_image


def ijk_to_lps_of(image):
    """IJK-to-LPS straight from SimpleITK's own index-to-point mapping (not our conversion code)."""
    origin = np.array(image.TransformIndexToPhysicalPoint((0, 0, 0)))
    matrix = np.eye(4)
    for axis in range(3):
        index = [0, 0, 0]
        index[axis] = 1
        matrix[:3, axis] = np.array(image.TransformIndexToPhysicalPoint(index)) - origin
    matrix[:3, 3] = origin
    return matrix


def check_saved_file(path, label_array, t1ce):
    """The .seg.nrrd read by slicerio has our segments, voxels and geometry."""
    saved = slicerio.read_segmentation(str(path))
    assert saved["masterRepresentation"] == "Binary labelmap"
    np.testing.assert_allclose(saved["ijkToLPS"], ijk_to_lps_of(t1ce), atol=1e-6)
    assert list(saved["referenceImageExtentOffset"]) == [0, 0, 0]
    assert saved["voxels"].shape[-3:] == SIZE  # slicerio uses (i, j, k) order

    assert [s["id"] for s in saved["segments"]] == [short for _, short, _, _ in SUBREGIONS]
    for value, short_name, display_name, colour in SUBREGIONS:
        segment = slicerio.segment_from_id(saved, short_name)
        assert segment["name"] == display_name
        np.testing.assert_allclose(segment["color"], colour, atol=1e-6)
        assert segment["terminology"]["type"][:2] == EXPECTED_TYPE_CODES[short_name]
        assert segment["terminology"]["category"][:2] == ["SCT", "49755003"]  # Morphologically abnormal structure
        assert segment["terminology"]["anatomicRegion"][:2] == ["SCT", "12738006"]  # Brain
        mask_kji = slicerio.segment_mask(saved, short_name).transpose(2, 1, 0)
        np.testing.assert_array_equal(mask_kji, label_array == value, err_msg=f"{display_name} voxels differ")


def test_label_map_round_trips_through_segmentation_node_and_seg_nrrd(mrml, tmp_path):
    t1ce, label_image = synthetic_study()
    label_array = sitk.GetArrayFromImage(label_image)
    assert {NCR, ED, ET} <= set(np.unique(label_array))

    t1ce_node = volume_node_from_image(mrml.scene, t1ce, "T1ce")
    expected_ijk_to_ras = np.diag([-1, -1, 1, 1]) @ ijk_to_lps_of(t1ce)
    np.testing.assert_allclose(ijk_to_ras_from_volume_node(t1ce_node), expected_ijk_to_ras, atol=1e-9)

    segmentation_node = segmentation_node_from_labels(mrml.scene, label_image, t1ce_node)
    segmentation = segmentation_node.GetSegmentation()
    assert segmentation.GetSourceRepresentationName() == "Binary labelmap"
    assert segmentation_node.GetNodeReferenceID(segmentation_node.GetReferenceImageGeometryReferenceRole()) \
        == t1ce_node.GetID()
    segment_ids = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
    assert segment_ids == ["NCR", "ED", "ET"]
    for _, short_name, display_name, colour in SUBREGIONS:
        segment = segmentation.GetSegment(short_name)
        assert segment.GetName() == display_name
        np.testing.assert_allclose(segment.GetColor(), colour)

    np.testing.assert_array_equal(labels_from_segmentation_node(segmentation_node, t1ce_node), label_array)

    path = save_segmentation(segmentation_node, tmp_path / "tumour.seg.nrrd")
    check_saved_file(path, label_array, t1ce)


def test_missing_enhancing_tumour_gives_an_empty_segment(mrml, tmp_path):
    t1ce, label_image = synthetic_study()
    label_array = sitk.GetArrayFromImage(label_image)
    label_array[label_array == ET] = NCR  # a non-enhancing tumour: no ET at all
    t1ce_node = volume_node_from_image(mrml.scene, t1ce, "T1ce")

    segmentation_node = segmentation_node_from_labels(mrml.scene, label_array, t1ce_node)

    segmentation = segmentation_node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 3
    assert segmentation.GetSegment("ET").GetName() == "Enhancing tumour"
    read_back = labels_from_segmentation_node(segmentation_node, t1ce_node)
    np.testing.assert_array_equal(read_back, label_array)
    assert not np.any(read_back == ET)

    path = save_segmentation(segmentation_node, tmp_path / "no_et.seg.nrrd")
    check_saved_file(path, label_array, t1ce)
    assert not slicerio.segment_mask(slicerio.read_segmentation(str(path)), "ET").any()


def test_overlapping_segments_after_editing_read_back_with_inner_region_on_top(mrml):
    t1ce, label_image = synthetic_study()
    label_array = sitk.GetArrayFromImage(label_image)
    t1ce_node = volume_node_from_image(mrml.scene, t1ce, "T1ce")
    segmentation_node = segmentation_node_from_labels(mrml.scene, label_image, t1ce_node)

    # What a user does in the Segment Editor with "overwrite: none": edema painted over the whole tumour.
    whole_tumour = slicer.vtkOrientedImageData()
    whole_tumour.SetDimensions(SIZE)
    whole_tumour.GetPointData().SetScalars(
        numpy_support.numpy_to_vtk((label_array > 0).astype(np.uint8).ravel(), deep=True))
    ijk_to_ras = vtk.vtkMatrix4x4()
    t1ce_node.GetIJKToRASMatrix(ijk_to_ras)
    whole_tumour.SetImageToWorldMatrix(ijk_to_ras)
    assert slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        whole_tumour, segmentation_node, "ED", slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    assert segmentation_node.GetSegmentation().GetNumberOfLayers() == 2  # ED now overlaps NCR and ET

    np.testing.assert_array_equal(labels_from_segmentation_node(segmentation_node, t1ce_node), label_array)


def test_volume_node_gives_back_the_same_image(mrml):
    t1ce, _ = synthetic_study()
    back = image_from_volume_node(volume_node_from_image(mrml.scene, t1ce, "T1ce"))
    np.testing.assert_allclose(back.GetOrigin(), t1ce.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(back.GetSpacing(), t1ce.GetSpacing(), atol=1e-9)
    np.testing.assert_allclose(back.GetDirection(), t1ce.GetDirection(), atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(t1ce))


def test_label_maps_that_do_not_fit_are_refused_with_the_fix(mrml):
    t1ce, label_image = synthetic_study()
    t1ce_node = volume_node_from_image(mrml.scene, t1ce, "T1ce")

    shifted = sitk.Image(label_image)
    shifted.SetOrigin((0.0, 0.0, 0.0))
    with pytest.raises(GliomaSuiteError, match="resample"):
        segmentation_node_from_labels(mrml.scene, shifted, t1ce_node)

    brats2023 = sitk.GetArrayFromImage(label_image)
    brats2023[brats2023 == ET] = 3
    with pytest.raises(GliomaSuiteError, match="map 3 to 4"):
        segmentation_node_from_labels(mrml.scene, brats2023, t1ce_node)


def colour_mask(rgb, colour):
    """Pixels whose hue matches a pure BraTS colour (shading changes brightness only)."""
    pixels = rgb.astype(float)
    brightness = pixels.max(axis=2, keepdims=True)
    normalised = pixels / np.maximum(brightness, 1)
    return (brightness[..., 0] > 40) & np.all(np.abs(normalised - colour) < 0.25, axis=2)


def test_segments_show_as_closed_surfaces_in_an_offscreen_3d_view(mrml, threed_view, tmp_path):
    t1ce, label_image = synthetic_study()
    t1ce_node = volume_node_from_image(mrml.scene, t1ce, "T1ce")
    segmentation_node = segmentation_node_from_labels(mrml.scene, label_image, t1ce_node)
    segmentation_node.CreateClosedSurfaceRepresentation()
    display_node = segmentation_node.GetDisplayNode()
    display_node.SetVisibility3D(True)

    threed_view.set_background((0.0, 0.0, 0.0))
    threed_view.reset_camera("Anterior")
    png = tmp_path / "segments_3d.png"
    rgb = threed_view.capture(png)

    assert png.stat().st_size > 0
    assert (rgb.max(axis=2) > 0).mean() > 0.05  # the tumour fills a good part of the view
    for _, _, display_name, colour in SUBREGIONS:
        assert colour_mask(rgb, colour).mean() > 0.002, f"{display_name} colour not visible in {png}"
    # The cut-away is anterior-superior: seen from the front, the necrotic core shows above the centre.
    # An LPS/RAS sign error would turn the cut to the back (core hidden behind edema) or below.
    core_rows = np.nonzero(colour_mask(rgb, (1.0, 0.0, 0.0)))[0]
    assert core_rows.mean() < rgb.shape[0] / 2
