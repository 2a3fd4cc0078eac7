"""Tests for gliomasuite.followup.lesions: lesions as components, matched across time points.

Synthetic spheres that move, grow, split, merge, vanish and appear check each status and that track
ids stay stable; real UCSF label pairs in ``$GLIOMASUITE_DATA`` (skipped without it) check what is
robust despite their inconsistent label codes: a whole-tumour mask matches itself and a shifted copy
of itself without any new lesion.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from gliomasuite.errors import GliomaSuiteError
from gliomasuite.followup import lesions

SHAPE = (40, 60, 80)  # numpy (z, y, x)
SPACING = (1.0, 1.0, 2.0)  # SimpleITK (x, y, z)


def ball(centre_xyz, radius_mm, shape=SHAPE, spacing=SPACING):
    z, y, x = np.indices(shape, dtype=float)
    return ((x - centre_xyz[0]) * spacing[0]) ** 2 + ((y - centre_xyz[1]) * spacing[1]) ** 2 + \
        ((z - centre_xyz[2]) * spacing[2]) ** 2 <= radius_mm ** 2


def track(*masks, **options):
    return lesions.track_lesions(list(masks), spacing=SPACING, **options)


def test_a_moving_growing_lesion_keeps_its_track():
    result = track(ball((20, 30, 20), 6), ball((22, 30, 20), 8), ball((24, 31, 20), 10))
    ids = [[lesion.track_id for lesion in tp.lesions] for tp in result.time_points]
    assert ids == [[1], [1], [1]]
    assert [tp.lesions[0].status for tp in result.time_points] == ["baseline", "continuing", "continuing"]
    volumes = [tp.lesions[0].volume_mm3 for tp in result.time_points]
    assert volumes[0] < volumes[1] < volumes[2]
    assert volumes[0] == pytest.approx(4 / 3 * np.pi * 6 ** 3, rel=0.1)
    assert 0 < result.time_points[1].lesions[0].dice < 1


def test_a_new_lesion_gets_a_new_track_and_a_vanished_one_is_resolved():
    first = ball((20, 30, 20), 6) | ball((60, 30, 20), 5)
    second = ball((20, 30, 20), 6) | ball((40, 50, 10), 5)  # the right one vanished, a new one appeared
    result = track(first, second)
    later = result.time_points[1]
    assert [(les.track_id, les.status) for les in later.lesions] == [(1, "continuing"), (3, "new")]
    assert later.resolved == [2] and later.merged == []
    assert [les.track_id for les in later.new_lesions()] == [3] and later.lesions[1].is_new
    summary = result.summary()
    assert summary["new"] == [{"time_point": 1, "track_id": 3}]
    assert summary["resolved"] == [{"time_point": 1, "track_id": 2}]


def test_a_split_lesion_is_not_new_and_a_merge_is_not_resolved():
    whole = ball((40, 30, 20), 12)
    halves = whole & ~(np.abs(np.indices(SHAPE)[2] - 40) <= 1)  # cut by a 3-voxel gap along x
    split = track(whole, halves)
    parts = split.time_points[1].lesions
    assert sorted(les.status for les in parts) == ["continuing", "split"]
    fragment = next(les for les in parts if les.status == "split")
    assert fragment.split_from == 1 and fragment.track_id == 2 and fragment.dice > 0
    assert split.time_points[1].new_lesions() == []
    merged = track(halves, whole).time_points[1]
    assert [les.status for les in merged.lesions] == ["continuing"]
    assert merged.resolved == [] and len(merged.merged) == 1 and merged.merged[0][1] == merged.lesions[0].track_id


def test_one_to_one_assignment_prefers_the_best_total_overlap():
    a = ball((30, 30, 20), 8)
    b = ball((46, 30, 20), 6)
    moved_a, moved_b = ball((32, 30, 20), 8), ball((49, 30, 20), 6)
    labels_before, n_before = lesions.find_lesions(a | b, SPACING[::-1])
    labels_after, n_after = lesions.find_lesions(moved_a | moved_b, SPACING[::-1])
    pairs = lesions.match_lesions(labels_before, n_before, labels_after, n_after)
    assert [(p[0], p[1]) for p in pairs] == [(1, 1), (2, 2)]  # largest first, each with its own


def test_no_overlap_means_no_match():
    result = track(ball((15, 15, 10), 5), ball((60, 45, 30), 5))
    assert result.time_points[1].lesions[0].status == "new" and result.time_points[1].resolved == [1]


def test_components_below_the_minimum_volume_are_dropped():
    mask = ball((20, 30, 20), 6)
    mask[5, 5, 5] = mask[5, 5, 6] = True  # 2 voxels of 2 mm³: speckle
    labels, count = lesions.find_lesions(mask, SPACING[::-1])
    assert count == 1 and labels[5, 5, 5] == 0
    assert lesions.find_lesions(mask, SPACING[::-1], min_volume_mm3=4.0)[1] == 2


def test_diagonal_voxels_are_one_lesion():
    mask = np.zeros((3, 3, 3), dtype=bool)
    mask[0, 0, 0] = mask[1, 1, 1] = mask[2, 2, 2] = True
    assert lesions.find_lesions(mask, (1.0, 1.0, 1.0), min_volume_mm3=0.0)[1] == 1


def test_hemisphere_and_centroid_in_lps():
    # x index grows towards the patient's left (LPS +x); the image centre is the midline.
    result = track(ball((15, 30, 20), 5) | ball((65, 30, 20), 5) | ball((40, 10, 20), 5))
    by_x = sorted(result.at(0), key=lambda les: les.centroid_lps[0])
    assert [les.hemisphere for les in by_x] == ["right", "midline", "left"]
    assert by_x[2].hemisphere_text() == "left hemisphere" and by_x[1].hemisphere_text() == "midline"
    assert by_x[0].centroid_lps == pytest.approx((15.0, 30.0, 40.0), abs=0.01)
    flipped = lesions.track_lesions([ball((15, 30, 20), 5)], spacing=SPACING, direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    assert flipped.at(0)[0].hemisphere == "left"  # x index now grows towards the patient's right


def test_grid_image_gives_numpy_masks_their_geometry_and_measure_adds_diameters():
    grid = sitk.Image(SHAPE[::-1], sitk.sitkUInt8)
    grid.SetSpacing(SPACING)
    grid.SetOrigin((-40.0, -30.0, 10.0))
    result = lesions.track_lesions([ball((20, 30, 20), 8)], grid, measure=True)
    lesion = result.at(0)[0]
    assert lesion.centroid_lps == pytest.approx((-20.0, 0.0, 50.0), abs=0.01)
    assert lesion.diameters.long_mm == pytest.approx(16.0) and lesion.diameters.measurable
    assert json.loads(json.dumps(result.to_dict()))["time_points"][0]["lesions"][0]["diameters"]["long_mm"] == 16.0


def test_to_dict_is_plain_json():
    result = track(ball((20, 30, 20), 6), ball((21, 30, 20), 6) | ball((60, 30, 20), 5))
    text = json.dumps(result.to_dict())
    assert '"status": "new"' in text and "labels" not in json.loads(text)["time_points"][0]
    json.dumps(result.summary())


def test_an_empty_time_point():
    result = track(ball((20, 30, 20), 6), np.zeros(SHAPE, dtype=bool), ball((20, 30, 20), 6))
    assert result.at(1) == [] and result.time_points[1].resolved == [1]
    assert result.at(2)[0].status == "new" and result.at(2)[0].track_id == 2


@pytest.mark.parametrize("call, words", [
    (lambda: lesions.track_lesions([]), "No time point"),
    (lambda: track(np.zeros(SHAPE), np.zeros((10, 10, 10))), "not on the baseline's voxel grid"),
    (lambda: lesions.track_lesions([np.zeros(SHAPE)]), "spacing"),
    (lambda: lesions.track_lesions([np.zeros((3, 3, 3))], sitk.Image(4, 4, 4, sitk.sitkUInt8)), "does not fit"),
])
def test_errors_name_the_problem(call, words):
    with pytest.raises(GliomaSuiteError, match=words):
        call()


# ---- real label pairs -----------------------------------------------------------------------------

def ucsf_pairs():
    root = os.environ.get("GLIOMASUITE_DATA")
    if not root:
        pytest.skip("GLIOMASUITE_DATA is not set (point it at ../shared/data to test on real label maps)")
    folder = Path(root) / "longitudinal" / "ucsf-alptdg-segs"
    pairs = [(p / f"{p.name}_time1_seg.nii.gz", p / f"{p.name}_time2_seg.nii.gz") for p in sorted(folder.glob("*"))]
    pairs = [pair for pair in pairs if pair[0].exists() and pair[1].exists()]
    if not pairs:
        pytest.skip(f"no time1/time2 label pairs in {folder}")
    return pairs


def whole_tumour(path):
    image = sitk.ReadImage(str(path))
    mask = sitk.GetArrayFromImage(image) > 0  # any label: codes differ between patients (1/2/4, 1/2/3)
    result = sitk.GetImageFromArray(mask.astype(np.uint8))
    result.CopyInformation(image)
    return result


@pytest.mark.realdata
def test_real_whole_tumour_matches_itself_and_a_shifted_copy():
    for first, _ in ucsf_pairs():
        mask = whole_tumour(first)
        array = sitk.GetArrayFromImage(mask)
        shifted = sitk.GetImageFromArray(np.roll(array, 2, axis=2))  # 2 mm along x
        shifted.CopyInformation(mask)
        result = lesions.track_lesions([mask, mask, shifted])
        same, moved = result.time_points[1], result.time_points[2]
        assert all(les.status == "continuing" and les.dice == pytest.approx(1.0) for les in same.lesions), first
        assert same.resolved == [] and same.merged == []
        assert moved.new_lesions() == [] and moved.resolved == [], first
        assert [les.track_id for les in moved.lesions] == [les.track_id for les in same.lesions]
        assert moved.lesions[0].volume_mm3 == pytest.approx(same.lesions[0].volume_mm3)


@pytest.mark.realdata
def test_real_time_points_keep_the_main_tumour():
    for first, second in ucsf_pairs():
        result = lesions.track_lesions([whole_tumour(first), whole_tumour(second)])
        later = result.time_points[1]
        largest = max(later.lesions, key=lambda les: les.volume_mm3)
        assert largest.status == "continuing" and largest.track_id == 1, (first, result.summary())
        json.dumps(result.to_dict())
