"""Lesions of a tumour region at each time point, followed from one time point to the next.

RANO counts a new measurable lesion as progression and sums products lesion by lesion, so the
follow-up must tell lesions apart and know which lesion of today is which lesion of last time. A lesion
is a connected component of the region's mask (26-connectivity: voxels touching by a corner are one
lesion, as a reader scrolling through slices would see it). Time points must already be on one grid
(registered to the baseline); lesions of consecutive time points are paired one-to-one by the
assignment that maximises their total Dice overlap.

Statuses: at the first time point every lesion is "baseline". Later, a lesion paired with an earlier
one is "continuing" (same track id); an unpaired lesion that overlaps an earlier lesion is "split" (a
fragment of it, not a new lesion; ``split_from`` names the track); one that overlaps nothing is "new".
An earlier lesion left unpaired is "resolved", or "merged" into the lesion it overlaps.
"""

from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from ..errors import GliomaSuiteError
from .diameters import LesionDiameters, mask_image, measure_lesions

#: Components smaller than this are dropped: 10 mm³ (ten 1 mm voxels, a ball 2.7 mm across) is far
#: below anything RANO measures (10 x 10 mm) and is mostly segmentation speckle, which would otherwise
#: be reported as new lesions.
MIN_LESION_MM3 = 10.0
#: A centroid closer than this to the midline is reported as "midline", as in survival.features.
MIDLINE_MARGIN_MM = 5.0
CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


@dataclass
class Lesion:
    """One lesion at one time point; ``label`` is its value in that time point's ``labels`` map."""

    track_id: int
    label: int
    status: str  # "baseline", "continuing", "split" or "new"
    voxels: int
    volume_mm3: float
    centroid_lps: Tuple[float, float, float]
    hemisphere: str  # "left", "right" or "midline"
    dice: Optional[float] = None  # overlap with the paired (or, for a split, the parent) earlier lesion
    split_from: Optional[int] = None
    diameters: Optional[LesionDiameters] = None  # RANO diameters, when tracked with measure=True

    @property
    def is_new(self) -> bool:
        return self.status == "new"

    def hemisphere_text(self) -> str:
        """Where the lesion is, in words for a report: "left hemisphere", "right hemisphere", "midline"."""
        return "midline" if self.hemisphere == "midline" else f"{self.hemisphere} hemisphere"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TimePointLesions:
    """The lesions of one time point, and the tracks of the previous one that ended here."""

    index: int
    lesions: List[Lesion]
    resolved: List[int] = field(default_factory=list)
    merged: List[Tuple[int, int]] = field(default_factory=list)  # (track id, track it merged into)
    labels: Optional[np.ndarray] = field(default=None, repr=False, compare=False)  # components, numpy (z, y, x)

    def new_lesions(self) -> List[Lesion]:
        return [lesion for lesion in self.lesions if lesion.status == "new"]

    def to_dict(self) -> dict:
        return {"index": self.index, "lesions": [lesion.to_dict() for lesion in self.lesions],
                "resolved": list(self.resolved),
                "merged": [{"track_id": a, "merged_into": b} for a, b in self.merged]}


@dataclass
class LesionTracks:
    """Lesions of every time point with track ids that are stable across time points."""

    time_points: List[TimePointLesions]
    min_volume_mm3: float
    midline_x_mm: float

    def at(self, index: int) -> List[Lesion]:
        """The lesions of time point ``index``."""
        return self.time_points[index].lesions

    def summary(self) -> dict:
        """Per track: the time points it is seen at, its volumes and statuses; and the events."""
        tracks = {}
        for tp in self.time_points:
            for lesion in tp.lesions:
                track = tracks.setdefault(lesion.track_id, {"track_id": lesion.track_id, "time_points": [],
                                                            "volumes_mm3": [], "statuses": [],
                                                            "split_from": lesion.split_from})
                track["time_points"].append(tp.index)
                track["volumes_mm3"].append(round(lesion.volume_mm3, 1))
                track["statuses"].append(lesion.status)
        return {"tracks": list(tracks.values()),
                "new": [{"time_point": tp.index, "track_id": les.track_id} for tp in self.time_points
                        for les in tp.new_lesions()],
                "resolved": [{"time_point": tp.index, "track_id": t} for tp in self.time_points for t in tp.resolved],
                "merged": [{"time_point": tp.index, "track_id": a, "merged_into": b} for tp in self.time_points
                           for a, b in tp.merged]}

    def to_dict(self) -> dict:
        return {"min_volume_mm3": self.min_volume_mm3, "midline_x_mm": self.midline_x_mm,
                "time_points": [tp.to_dict() for tp in self.time_points]}


def find_lesions(mask: np.ndarray, spacing_zyx: Sequence[float],
                 min_volume_mm3: float = MIN_LESION_MM3) -> Tuple[np.ndarray, int]:
    """Connected components of ``mask`` of at least ``min_volume_mm3``, numbered 1..n largest first."""
    components, count = ndimage.label(np.asarray(mask) != 0, structure=CONNECTIVITY)
    sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
    keep = np.flatnonzero(sizes * float(np.prod(spacing_zyx)) >= min_volume_mm3)
    keep = keep[np.argsort(-sizes[keep], kind="stable")]
    renumber = np.zeros(count + 1, dtype=np.int32)
    renumber[keep + 1] = np.arange(1, len(keep) + 1)
    return renumber[components], len(keep)


def dice_matrix(labels_a: np.ndarray, count_a: int, labels_b: np.ndarray,
                count_b: int) -> Tuple[np.ndarray, np.ndarray]:
    """Dice and voxel intersection of every lesion pair: arrays of shape (count_a, count_b)."""
    joint = np.bincount((labels_a.astype(np.int64) * (count_b + 1) + labels_b).ravel(),
                        minlength=(count_a + 1) * (count_b + 1)).reshape(count_a + 1, count_b + 1)
    sizes_a, sizes_b = joint.sum(axis=1)[1:], joint.sum(axis=0)[1:]
    intersection = joint[1:, 1:]
    dice = 2.0 * intersection / np.maximum(sizes_a[:, None] + sizes_b[None, :], 1)
    return dice, intersection


def match_lesions(labels_a: np.ndarray, count_a: int, labels_b: np.ndarray,
                  count_b: int) -> List[Tuple[int, int, float]]:
    """One-to-one pairs (label in a, label in b, Dice) maximising total Dice; no pair without overlap."""
    return _assign(dice_matrix(labels_a, count_a, labels_b, count_b)[0])


def _assign(dice: np.ndarray) -> List[Tuple[int, int, float]]:
    if not dice.size:
        return []
    rows, columns = linear_sum_assignment(-dice)
    return [(int(r) + 1, int(c) + 1, float(dice[r, c])) for r, c in zip(rows, columns) if dice[r, c] > 0]


def track_lesions(masks: Sequence[Union[sitk.Image, np.ndarray]], grid: Optional[sitk.Image] = None, *,
                  spacing: Optional[Sequence[float]] = None, direction: Optional[Sequence[float]] = None,
                  origin: Optional[Sequence[float]] = None, min_volume_mm3: float = MIN_LESION_MM3,
                  midline_x_mm: Optional[float] = None, measure: bool = False) -> LesionTracks:
    """Lesions of one region (e.g. enhancing tumour) at each time point, in time order, with tracks.

    ``masks`` are SimpleITK images, or numpy arrays in (z, y, x) order on the grid of the image
    ``grid`` (or with ``spacing``, ``direction`` and ``origin`` in SimpleITK (x, y, z) order), all on
    the baseline's grid. The midline for the hemisphere is ``midline_x_mm`` (LPS x, where +x is the
    patient's left), by default the centre of the image's extent, which is the midline for
    atlas-space images such as BraTS's. ``measure`` adds each lesion's RANO diameters.
    """
    if not masks:
        raise GliomaSuiteError("No time point was given: pass one mask per time point, baseline first.")
    images = [_as_image(mask, grid, spacing, direction, origin) for mask in masks]
    _check_same_grid(images)
    reference = images[0]
    spacing_zyx = np.asarray(reference.GetSpacing(), dtype=float)[::-1]
    midline = _image_centre_x(reference) if midline_x_mm is None else float(midline_x_mm)
    time_points: List[TimePointLesions] = []
    previous, next_track = None, 1
    for index, image in enumerate(images):
        labels, count = find_lesions(sitk.GetArrayFromImage(image), spacing_zyx, min_volume_mm3)
        lesions = _describe(labels, count, reference, spacing_zyx, midline)
        if measure and count:
            found = measure_lesions(_like(labels, reference))
            for lesion in lesions:
                lesion.diameters = found[lesion.label]
        point = TimePointLesions(index, lesions, labels=labels)
        if previous is None:
            for lesion in lesions:
                lesion.track_id, next_track = next_track, next_track + 1
        else:
            next_track = _link(previous, point, next_track)
        time_points.append(point)
        previous = point
    return LesionTracks(time_points, float(min_volume_mm3), midline)


def _link(before: TimePointLesions, now: TimePointLesions, next_track: int) -> int:
    """Give ``now``'s lesions their track ids and statuses from ``before``; returns the next free id."""
    count_before, count_now = len(before.lesions), len(now.lesions)
    dice, intersection = dice_matrix(before.labels, count_before, now.labels, count_now)
    paired = {b: (a, d) for a, b, d in _assign(dice)}
    for lesion in now.lesions:
        if lesion.label in paired:
            a, overlap = paired[lesion.label]
            lesion.track_id, lesion.status, lesion.dice = before.lesions[a - 1].track_id, "continuing", overlap
            continue
        lesion.track_id, next_track = next_track, next_track + 1
        column = intersection[:, lesion.label - 1]
        if count_before and column.max() > 0:
            parent = int(np.argmax(column))
            lesion.status, lesion.split_from = "split", before.lesions[parent].track_id
            lesion.dice = float(dice[parent, lesion.label - 1])
        else:
            lesion.status = "new"
    continued = {a for a, _ in paired.values()}
    for old in before.lesions:
        if old.label in continued:
            continue
        row = intersection[old.label - 1]
        if count_now and row.max() > 0:
            now.merged.append((old.track_id, now.lesions[int(np.argmax(row))].track_id))
        else:
            now.resolved.append(old.track_id)
    return next_track


def _describe(labels: np.ndarray, count: int, image: sitk.Image, spacing_zyx: np.ndarray,
              midline: float) -> List[Lesion]:
    if not count:
        return []
    where = np.nonzero(labels)
    ids = labels[where]
    voxels = np.bincount(ids, minlength=count + 1)[1:]
    # Mean voxel index per lesion, numpy (z, y, x) order.
    centres = np.stack([np.bincount(ids, weights=axis, minlength=count + 1)[1:] for axis in where], axis=1)
    centres /= voxels[:, None]
    lesions = []
    for label, size, centre in zip(range(1, count + 1), voxels, centres):
        point = image.TransformContinuousIndexToPhysicalPoint([float(c) for c in centre[::-1]])
        offset = point[0] - midline  # LPS: +x is the patient's left
        side = "midline" if abs(offset) < MIDLINE_MARGIN_MM else ("left" if offset > 0 else "right")
        lesions.append(Lesion(0, int(label), "baseline", int(size), float(size * np.prod(spacing_zyx)),
                              tuple(float(v) for v in point), side))
    return lesions


def _as_image(mask: Union[sitk.Image, np.ndarray], grid: Optional[sitk.Image], spacing: Optional[Sequence[float]],
              direction: Optional[Sequence[float]], origin: Optional[Sequence[float]]) -> sitk.Image:
    if isinstance(mask, sitk.Image) or grid is None:
        return mask_image(mask, spacing, direction, origin)
    array = np.asarray(mask)
    if array.shape != tuple(grid.GetSize())[::-1]:
        raise GliomaSuiteError(f"A mask of shape {array.shape} does not fit the grid of size {grid.GetSize()} "
                               "(numpy order is z, y, x): resample the mask onto the baseline's grid.")
    return _like((array != 0).astype(np.uint8), grid)


def _like(array: np.ndarray, grid: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(grid)
    return image


def _image_centre_x(image: sitk.Image) -> float:
    size = image.GetSize()
    corners = [(i, j, k) for i in (0, size[0] - 1) for j in (0, size[1] - 1) for k in (0, size[2] - 1)]
    xs = [image.TransformIndexToPhysicalPoint(corner)[0] for corner in corners]
    return 0.5 * (min(xs) + max(xs))


def _check_same_grid(images: List[sitk.Image]) -> None:
    first = images[0]
    for number, image in enumerate(images[1:], start=2):
        same = (image.GetSize() == first.GetSize()
                and np.allclose(image.GetSpacing(), first.GetSpacing(), atol=1e-4)
                and np.allclose(image.GetOrigin(), first.GetOrigin(), atol=1e-3)
                and np.allclose(image.GetDirection(), first.GetDirection(), atol=1e-4))
        if not same:
            raise GliomaSuiteError(f"Time point {number} is not on the baseline's voxel grid (size {image.GetSize()} "
                                   f"vs {first.GetSize()}, or spacing, origin or direction differ): register and "
                                   "resample it onto the baseline before following lesions.")
