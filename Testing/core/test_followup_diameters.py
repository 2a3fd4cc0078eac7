"""Tests for gliomasuite.followup.diameters: RANO bidimensional measurement of a lesion mask.

Synthetic shapes with known diameters check the geometry (anisotropic spacing, image direction,
non-convex lesions); real lesions in ``$GLIOMASUITE_DATA`` (skipped without it) are checked against
a brute-force reference written here independently: every pair of boundary pixel centres, longest
first, each segment's distance to every outside pixel computed exactly; no convex hull, no pruning,
no sampling.
"""

import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from gliomasuite.errors import GliomaSuiteError
from gliomasuite.followup import diameters

TOLERANCE_DEGREES = diameters.PERPENDICULAR_TOLERANCE_DEGREES


def ellipse_mask(shape_zyx, spacing_xyz, semi_x_mm, semi_y_mm, slices=(1, 2, 3), angle_degrees=0.0):
    z, y, x = np.indices(shape_zyx, dtype=float)
    cx, cy = (shape_zyx[2] - 1) / 2, (shape_zyx[1] - 1) / 2
    px, py = (x - cx) * spacing_xyz[0], (y - cy) * spacing_xyz[1]
    angle = math.radians(angle_degrees)
    u, v = px * math.cos(angle) + py * math.sin(angle), -px * math.sin(angle) + py * math.cos(angle)
    return ((u / semi_x_mm) ** 2 + (v / semi_y_mm) ** 2 <= 1 + 1e-9) & np.isin(z, slices)


def _orientation_rows(starts, ends, w):
    """Sign of (end - start) x (w - start) for each row's segment and the one point ``w``."""
    return np.sign((ends[:, 0] - starts[:, 0]) * (w[1] - starts[:, 1]) - (ends[:, 1] - starts[:, 1]) * (w[0] - starts[:, 0]))


def brute_force(mask2d, pixel_mm):
    """Longest inside chord between boundary pixel centres, then the longest near-perpendicular one crossing it."""
    m = np.pad(np.asarray(mask2d, dtype=bool)[ndimage.find_objects(np.asarray(mask2d, dtype=np.int8))[0]], 1)
    any_outside = np.zeros_like(m)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            any_outside |= ~np.roll(m, (dr, dc), axis=(0, 1))
    points = np.argwhere(m & any_outside).astype(float)
    i, j = np.triu_indices(len(points), 1)
    vectors = (points[j] - points[i]) * np.asarray(pixel_mm, dtype=float)
    lengths = np.hypot(vectors[:, 0], vectors[:, 1])

    outside = np.argwhere(~m).astype(float)

    def inside(k):  # no outside pixel centre nearer than half a pixel (Chebyshev) to the segment
        a, b = points[i[k]], points[j[k]]
        near = outside[np.all((outside >= np.minimum(a, b) - 1) & (outside <= np.maximum(a, b) + 1), axis=1)]
        e0, d = a - near, b - a  # offset from each pixel centre at t = 0, and the direction
        # max(|ex(t)|, |ey(t)|) is convex and piecewise linear: its minimum on [0, 1] lies at an end, a
        # zero of ex or ey, or where |ex| = |ey|.
        with np.errstate(divide="ignore", invalid="ignore"):
            ts = [np.zeros(len(near)), np.ones(len(near)), -e0[:, 0] / d[0], -e0[:, 1] / d[1],
                  (e0[:, 1] - e0[:, 0]) / (d[0] - d[1]), -(e0[:, 0] + e0[:, 1]) / (d[0] + d[1])]
        distance = np.full(len(near), np.inf)
        for t in ts:
            t = np.clip(np.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0), 0.0, 1.0)[:, None]
            distance = np.minimum(distance, np.abs(e0 + t * d).max(axis=1))
        return bool(np.all(distance >= 0.5 - 1e-9))

    # Quick refusal, exact too: a sample strictly inside an outside pixel's square condemns its chord.
    refused = np.zeros(len(i), dtype=bool)
    for part in np.array_split(np.arange(len(i)), max(1, len(i) // 50000)):  # bounded memory
        a, b = points[i[part]], points[j[part]]
        samples = a[:, None, :] + np.linspace(0, 1, 17)[None, :, None] * (b - a)[:, None, :]
        nearest = np.rint(samples).astype(int)
        strictly_in = np.abs(samples - nearest).max(axis=2) < 0.5 - 1e-9
        refused[part] = np.any(strictly_in & ~m[nearest[..., 0], nearest[..., 1]], axis=1)

    def first_inside(ranked):
        return next((k for k in ranked if not refused[k] and inside(k)), None)

    longest = first_inside(np.argsort(-lengths, kind="stable"))
    direction = vectors[longest] / lengths[longest]
    near_perpendicular = np.abs(vectors @ direction) <= lengths * math.sin(math.radians(TOLERANCE_DEGREES))
    p, q = points[i[longest]] * pixel_mm, points[j[longest]] * pixel_mm

    def orientation(u, v, w):  # sign of the cross product (v - u) x (w - u), for every row of w
        return np.sign((v[0] - u[0]) * (w[:, 1] - u[1]) - (v[1] - u[1]) * (w[:, 0] - u[0]))

    starts, ends = points[i] * pixel_mm, points[j] * pixel_mm
    # Segments cross (touching counts) when each one's ends are not strictly on one side of the other.
    crosses = ((orientation(p, q, starts) * orientation(p, q, ends) <= 0)
               & (_orientation_rows(starts, ends, p) * _orientation_rows(starts, ends, q) <= 0))
    candidates = np.flatnonzero(near_perpendicular & crosses & (lengths > 0))
    short = first_inside(candidates[np.argsort(-lengths[candidates], kind="stable")]) if candidates.size else None
    return lengths[longest], (0.0 if short is None else lengths[short])


def segment_inside(mask2d, a, b):
    """Independent check that the segment between two pixel centres stays on mask pixels."""
    samples = np.linspace(0, 1, 400)[:, None] * (np.subtract(b, a)) + np.asarray(a, dtype=float)
    return bool(np.all(mask2d[tuple(np.rint(samples).astype(int).T)]))


@pytest.mark.parametrize("spacing, semi_x, semi_y", [
    ((0.5, 1.0, 3.0), 20.0, 10.0),   # long axis along x, half-millimetre pixels across it
    ((1.2, 0.6, 2.0), 12.0, 18.0),   # long axis along y
    ((1.0, 1.0, 1.0), 15.0, 15.0),   # a circle
])
def test_axis_aligned_ellipse_on_anisotropic_spacing(spacing, semi_x, semi_y):
    shape = (5, int(2 * semi_y / spacing[1]) + 9, int(2 * semi_x / spacing[0]) + 9)
    mask = ellipse_mask(shape, spacing, semi_x, semi_y)
    result = diameters.measure_lesion(mask, spacing=spacing)
    assert result.long_mm == pytest.approx(2 * max(semi_x, semi_y), abs=max(spacing[:2]))
    assert result.short_mm == pytest.approx(2 * min(semi_x, semi_y), abs=max(spacing[:2]))
    assert result.product_mm2 == pytest.approx(result.long_mm * result.short_mm)
    assert result.slice_axis == 2 and result.slice_index in (1, 2, 3) and result.slice_count == 3
    assert result.measurable
    (a, b) = result.long_ends_lps
    assert math.dist(a, b) == pytest.approx(result.long_mm)


def test_rotated_ellipse_on_anisotropic_spacing():
    spacing = (0.7, 1.1, 2.0)
    mask = ellipse_mask((3, 70, 100), spacing, 25.0, 9.0, slices=(1,), angle_degrees=30.0)
    result = diameters.measure_lesion(mask, spacing=spacing)
    assert result.long_mm == pytest.approx(50.0, abs=1.5)
    assert result.short_mm == pytest.approx(18.0, abs=1.5)
    (a, b), (c, e) = result.long_ends_lps, result.short_ends_lps
    long_vector, short_vector = np.subtract(b, a), np.subtract(e, c)
    assert math.degrees(math.atan2(long_vector[1], long_vector[0])) % 180 == pytest.approx(30.0, abs=3.0)
    cosine = abs(long_vector @ short_vector) / (np.linalg.norm(long_vector) * np.linalg.norm(short_vector))
    assert cosine <= math.sin(math.radians(TOLERANCE_DEGREES)) + 1e-9


def test_rectangle_long_diameter_is_its_diagonal():
    spacing = (0.5, 1.0, 1.0)
    mask = np.zeros((3, 20, 80), dtype=bool)
    mask[1, 4:17, 10:71] = True  # 61 x 13 pixel centres: 30 mm x 12 mm between the outermost centres
    result = diameters.measure_lesion(mask, spacing=spacing)
    assert result.long_mm == pytest.approx(math.hypot(30.0, 12.0))
    # Exactly perpendicular to the diagonal the chord is 12 x |diagonal| / 30 mm; the tolerance lets it
    # turn up to 5 degrees further from the vertical, to at most 12 / cos(atan(12/30) + 5 degrees).
    lowest = 12.0 * math.hypot(30.0, 12.0) / 30.0
    highest = 12.0 / math.cos(math.atan2(12.0, 30.0) + math.radians(TOLERANCE_DEGREES))
    assert lowest - 0.5 <= result.short_mm <= highest + 1e-9


def test_slices_are_axial_when_the_acquisition_is_coronal():
    # Index axes: i -> x, j -> z (superior-inferior), k -> y; the axial slices run along j.
    array = np.zeros((30, 6, 40), dtype=np.uint8)  # numpy (k, j, i)
    array[5:25, 3, 5:35] = 1                      # on the j = 3 slice: 20 x 30 pixel block
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 2.5, 0.8))
    image.SetDirection((1, 0, 0, 0, 0, 1, 0, 1, 0))
    image.SetOrigin((-20.0, 10.0, 30.0))
    result = diameters.measure_lesion(image)
    assert result.slice_axis == 1 and result.slice_index == 3
    assert result.long_mm == pytest.approx(math.hypot(29 * 1.0, 19 * 0.8))
    for end in result.long_ends_index:
        assert end[1] == 3
    assert result.long_ends_lps == tuple(image.TransformIndexToPhysicalPoint(end) for end in result.long_ends_index)


def test_flipped_direction_and_origin_give_lps_ends():
    mask = ellipse_mask((5, 41, 61), (1.0, 1.0, 1.0), 20.0, 10.0)
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    image.SetOrigin((100.0, 50.0, -20.0))
    result = diameters.measure_lesion(image)
    assert result.long_mm == pytest.approx(40.0)
    for lps, index in zip(result.short_ends_lps, result.short_ends_index):
        assert lps == image.TransformIndexToPhysicalPoint(index)


def ring(outer_px, inner_px, gap=False, size=40):
    y, x = np.indices((size, size)) - (size - 1) / 2
    radius = np.hypot(x, y)
    shape = (radius <= outer_px) & (radius >= inner_px)
    if gap:
        shape &= ~((np.abs(y) <= 3) & (x > 0))  # open on the right: a C
    return shape


@pytest.mark.parametrize("gap", [False, True])
def test_ring_and_c_shaped_lesions_keep_the_diameter_inside(gap):
    shape = ring(15, 10, gap)
    found = diameters.slice_diameters(shape, (1.0, 1.0))
    (a, b), (c, e) = found.long_ends, found.short_ends
    assert segment_inside(shape, a, b) and segment_inside(shape, c, e)
    assert found.long_mm < 25.0  # never across the necrotic centre (outer diameter 30)
    reference = brute_force(shape, (1.0, 1.0))
    assert found.long_mm == pytest.approx(reference[0], abs=1.0)
    assert found.short_mm == pytest.approx(reference[1], abs=1.0)


def test_ring_lesion_in_3d_is_measured_quickly():
    z, y, x = np.indices((66, 66, 66)) - 32.5
    radius = np.sqrt(x ** 2 + y ** 2 + z ** 2)
    shell = (radius <= 30) & (radius >= 24)  # a 60 mm ring-enhancing lesion with a necrotic core
    start = time.perf_counter()
    result = diameters.measure_lesion(shell, spacing=(1.0, 1.0, 1.0))
    assert time.perf_counter() - start < 3.0
    assert result.long_mm < 60.0 and result.measurable
    solid = radius <= 30
    start = time.perf_counter()
    assert diameters.measure_lesion(solid, spacing=(1.0, 1.0, 1.0)).long_mm == pytest.approx(59.0, abs=1.0)
    assert time.perf_counter() - start < 1.0


def test_measure_lesions_of_a_label_map():
    labels = np.zeros((4, 61, 91), dtype=np.int16)
    labels[ellipse_mask(labels.shape, (1.0, 1.0, 1.0), 12.0, 8.0, slices=(1, 2))] = 1
    labels[2, 2:6, 2:8] = 3  # a small lesion: 5 x 3 mm between outermost centres, not measurable
    found = diameters.measure_lesions(labels, spacing=(1.0, 1.0, 1.0))
    assert sorted(found) == [1, 3]
    assert found[1].measurable and not found[3].measurable
    assert found[3].long_mm == pytest.approx(math.hypot(5, 3))
    assert found[3].to_dict()["slice_index"] == 2


def test_single_pixel_and_line_lesions_have_zero_short_diameter():
    line = np.zeros((1, 5, 30), dtype=bool)
    line[0, 2, 3:23] = True
    result = diameters.measure_lesion(line, spacing=(0.5, 0.5, 5.0))
    assert (result.long_mm, result.short_mm) == (pytest.approx(9.5), 0.0)
    dot = np.zeros((1, 3, 3), dtype=bool)
    dot[0, 1, 1] = True
    assert diameters.measure_lesion(dot, spacing=(1.0, 1.0, 1.0)).long_mm == 0.0


@pytest.mark.parametrize("call, words", [
    (lambda: diameters.measure_lesion(np.zeros((3, 3, 3)), spacing=(1, 1, 1)), "empty"),
    (lambda: diameters.measure_lesion(np.ones((3, 3, 3))), "spacing"),
    (lambda: diameters.measure_lesion(np.ones((3, 3)), spacing=(1, 1)), "3D"),
    (lambda: diameters.measure_lesions(-np.ones((3, 3, 3)), spacing=(1, 1, 1)), "negative"),
])
def test_errors_name_the_problem(call, words):
    with pytest.raises(GliomaSuiteError, match=words):
        call()


# ---- real lesions ---------------------------------------------------------------------------------

# Chosen for variety: ring-enhancing (00006, 01479: the largest, 70 mm), a long diameter ending on a
# pixel with only a diagonal outside neighbour (AME), irregular (TCIA02_606), small (01481).
BRATS_CASES = ["BraTS2021_00006", "BraTS2021_01479", "BraTS2021_01481", "Brats18_CBICA_AME_1",
               "Brats18_TCIA02_606_1"]


def data_root() -> Path:
    root = os.environ.get("GLIOMASUITE_DATA")
    if not root:
        pytest.skip("GLIOMASUITE_DATA is not set (point it at ../shared/data to test on real lesions)")
    return Path(root)


def largest_component(mask):
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if count == 0:
        pytest.skip("the mask holds no lesion")
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def check_against_brute_force(image, mask):
    lesion = sitk.GetImageFromArray(mask.astype(np.uint8))
    lesion.CopyInformation(image)
    start = time.perf_counter()
    result = diameters.measure_lesion(lesion)
    elapsed = time.perf_counter() - start
    pixel_mm = image.GetSpacing()[1::-1]  # (rows, columns) of an axial slice = (y, x)
    long_mm, short_mm = brute_force(mask[result.slice_index], pixel_mm)
    assert abs(result.long_mm - long_mm) <= 1.0, (result, long_mm)
    assert abs(result.short_mm - short_mm) <= 1.0, (result, short_mm)
    assert elapsed < 5.0
    return result


@pytest.mark.realdata
@pytest.mark.parametrize("case", BRATS_CASES)
def test_real_enhancing_lesions_match_the_brute_force_reference(case):
    path = data_root() / "brats" / case / f"{case}_seg.nii.gz"
    if not path.exists():
        pytest.skip(f"{path} is missing")
    image = sitk.ReadImage(str(path))
    result = check_against_brute_force(image, largest_component(sitk.GetArrayFromImage(image) == 4))
    assert result.measurable


@pytest.mark.realdata
@pytest.mark.parametrize("patient", ["PGBM-01", "PGBM-05"])  # PGBM-05 Post: a chord grazing an outside pixel
@pytest.mark.parametrize("name", ["Pre_Mask", "Post_Mask"])
def test_real_progression_masks_match_the_brute_force_reference(patient, name):
    path = data_root() / "longitudinal" / "brain-tumor-progression" / patient / f"{name}.nii.gz"
    if not path.exists():
        pytest.skip(f"{path} is missing")
    image = sitk.ReadImage(str(path))
    check_against_brute_force(image, largest_component(sitk.GetArrayFromImage(image) > 0))
