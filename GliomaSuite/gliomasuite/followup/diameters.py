"""RANO bidimensional measurement of a lesion from its 3D mask, as a reader would take it by hand.

On each axial slice the reader draws the longest diameter that stays within the lesion, then the
longest diameter perpendicular to it; the slice with the largest product of the two is the lesion's
measurement (RANO 2.0). Doing this on the mask rather than by eye makes it reproducible between
time points, which is what a percent change needs.

Conventions:

* Diameters run between the centres of the lesion's boundary pixels, so a lesion N voxels across
  measures (N - 1) voxels: the same on every scan, which is what comparisons need.
* A chord counts as inside when every point of it lies within half a voxel of a lesion pixel centre,
  i.e. inside the union of the lesion's pixel squares, touching corners allowed; this is tested
  exactly, not by sampling, so a chord grazing an outside pixel is refused on every scan alike.
  Ring-enhancing lesions therefore never get a diameter across their necrotic centre.
* The perpendicular may deviate up to ``PERPENDICULAR_TOLERANCE_DEGREES`` (readers accept near-right
  angles on a pixel grid) and need not cross the long diameter.
* Distances are physical (mm), honouring anisotropic spacing.
"""

import math
from dataclasses import asdict, dataclass
from typing import Dict, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from ..errors import GliomaSuiteError
from .rano import is_measurable

PERPENDICULAR_TOLERANCE_DEGREES = 5.0
#: Step between samples along a chord, in voxels, for the quick rejection of chords that leave the
#: lesion (and for finding the pixels the exact test must look at).
COARSE_STEP_VOXELS = 0.5

Point3 = Tuple[float, float, float]
Index3 = Tuple[int, int, int]


class SliceDiameters(NamedTuple):
    """One slice's long and short diameters (mm) and their end pixels as (row, column) of the slice."""

    long_mm: float
    short_mm: float
    long_ends: Tuple[Tuple[int, int], Tuple[int, int]]
    short_ends: Tuple[Tuple[int, int], Tuple[int, int]]


@dataclass
class LesionDiameters:
    """RANO measurement of one lesion. ``slice_axis`` is the SimpleITK index axis the axial slices are
    taken across (2, i.e. k, for axial acquisitions) and ``slice_index`` the chosen slice along it;
    ends are in physical LPS millimetres and in SimpleITK (i, j, k) voxel indices."""

    slice_index: int
    slice_axis: int
    long_mm: float
    short_mm: float
    product_mm2: float
    long_ends_lps: Tuple[Point3, Point3]
    short_ends_lps: Tuple[Point3, Point3]
    long_ends_index: Tuple[Index3, Index3]
    short_ends_index: Tuple[Index3, Index3]
    measurable: bool
    slice_count: int

    def to_dict(self) -> dict:
        return asdict(self)


def mask_image(mask: Union[sitk.Image, np.ndarray], spacing: Optional[Sequence[float]] = None,
               direction: Optional[Sequence[float]] = None, origin: Optional[Sequence[float]] = None) -> sitk.Image:
    """A SimpleITK image as given, or one built from a numpy array in ``sitk.GetArrayFromImage``
    (z, y, x) order with ``spacing``, ``direction`` and ``origin`` in SimpleITK's (x, y, z) order."""
    if isinstance(mask, sitk.Image):
        return mask
    array = np.asarray(mask)
    if array.ndim != 3:
        raise GliomaSuiteError(f"The mask has {array.ndim} dimensions, not 3: pass the lesion's 3D mask.")
    if spacing is None:
        raise GliomaSuiteError("A numpy mask needs its voxel spacing to be measured in mm: pass spacing= (x, y, z "
                               "in mm, as image.GetSpacing() gives it), or pass the SimpleITK image.")
    image = sitk.GetImageFromArray(array.astype(np.int32))
    image.SetSpacing([float(s) for s in spacing])
    if direction is not None:
        image.SetDirection([float(d) for d in direction])
    if origin is not None:
        image.SetOrigin([float(o) for o in origin])
    return image


def axial_axis(image: sitk.Image) -> int:
    """The numpy axis (of ``sitk.GetArrayFromImage``) whose direction is closest to superior-inferior.

    For axis-aligned images this is exact. For oblique ones the slices are the acquired ones nearest
    to axial, not resampled to true axial; in-plane distances stay exact (the direction is a rotation).
    """
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    return 2 - int(np.argmax(np.abs(direction[2])))  # columns are the (i, j, k) axes; row 2 is S-I


def measure_lesion(mask: Union[sitk.Image, np.ndarray], spacing: Optional[Sequence[float]] = None,
                   direction: Optional[Sequence[float]] = None,
                   origin: Optional[Sequence[float]] = None) -> LesionDiameters:
    """RANO diameters of the lesion in ``mask`` (non-zero voxels); see :func:`mask_image` for arrays."""
    image = mask_image(mask, spacing, direction, origin)
    array = sitk.GetArrayFromImage(image) != 0
    if not array.any():
        raise GliomaSuiteError("The lesion mask is empty, so there is nothing to measure: pass a mask with the "
                               "lesion's voxels set.")
    box = ndimage.find_objects(array.astype(np.int8))[0]
    return _measure(array[box], tuple(s.start for s in box), image)


def measure_lesions(labels: Union[sitk.Image, np.ndarray], spacing: Optional[Sequence[float]] = None,
                    direction: Optional[Sequence[float]] = None,
                    origin: Optional[Sequence[float]] = None) -> Dict[int, LesionDiameters]:
    """RANO diameters of every lesion of a label map (one integer per lesion, 0 background), by label."""
    image = mask_image(labels, spacing, direction, origin)
    array = np.rint(sitk.GetArrayFromImage(image)).astype(np.int64)
    if array.min() < 0:
        raise GliomaSuiteError("The lesion label map has negative labels: number the lesions 1, 2, ... with 0 as "
                               "background (e.g. with scipy.ndimage.label).")
    out = {}
    for label, box in enumerate(ndimage.find_objects(array), start=1):
        if box is not None:
            out[label] = _measure(array[box] == label, tuple(s.start for s in box), image)
    return out


def _measure(lesion: np.ndarray, offset: Tuple[int, ...], image: sitk.Image) -> LesionDiameters:
    axis = axial_axis(image)
    in_plane = [a for a in range(3) if a != axis]
    spacing = np.asarray(image.GetSpacing(), dtype=float)[::-1]  # numpy axis order
    pixel_mm = (spacing[in_plane[0]], spacing[in_plane[1]])
    slices = np.moveaxis(lesion, axis, 0)
    occupied = [s for s in range(slices.shape[0]) if slices[s].any()]
    # Largest slices first: a slice whose extent (an upper bound on both diameters) squared cannot beat
    # the best product so far is skipped, and a chord search stops at chords too short to win.
    extents = {s: _extent_mm(slices[s], pixel_mm) for s in occupied}
    best, best_key = None, (-1.0, -1.0)
    for s in sorted(occupied, key=lambda s: -extents[s]):
        beat = best_key[0]
        if beat > 0 and extents[s] ** 2 <= beat:
            break
        found = _slice_diameters(slices[s], pixel_mm, max(beat, 0.0))
        if found is not None and (found.long_mm * found.short_mm, found.long_mm) > best_key:
            best, best_key = (s, found), (found.long_mm * found.short_mm, found.long_mm)
    s, found = best

    def to_index(end: Tuple[int, int]) -> Index3:
        numpy_index = [0, 0, 0]
        numpy_index[axis] = s + offset[axis]
        for a, value in zip(in_plane, end):
            numpy_index[a] = int(value) + offset[a]
        return tuple(numpy_index[::-1])

    long_index = tuple(to_index(end) for end in found.long_ends)
    short_index = tuple(to_index(end) for end in found.short_ends)

    def physical(ends: Tuple[Index3, Index3]) -> Tuple[Point3, Point3]:
        return tuple(tuple(image.TransformIndexToPhysicalPoint(end)) for end in ends)

    return LesionDiameters(
        slice_index=s + offset[axis], slice_axis=2 - axis, long_mm=found.long_mm, short_mm=found.short_mm,
        product_mm2=found.long_mm * found.short_mm, long_ends_lps=physical(long_index),
        short_ends_lps=physical(short_index), long_ends_index=long_index, short_ends_index=short_index,
        measurable=is_measurable(found.long_mm, found.short_mm), slice_count=len(occupied))


def slice_diameters(mask: np.ndarray, pixel_mm: Sequence[float]) -> SliceDiameters:
    """Longest inside chord of a 2D mask and the longest inside chord perpendicular to it.

    ``pixel_mm`` is the pixel size along (rows, columns). Candidate ends are the boundary pixels
    (pixels with an outside 8-neighbour). The longest chord is searched among the convex hull's
    vertices first (the answer for convex lesions) and among all boundary pairs, longest first,
    when that chord leaves the lesion.
    """
    if not np.any(mask):
        raise GliomaSuiteError("The slice holds no lesion pixel, so it has no diameter: pass a slice of the lesion.")
    return _slice_diameters(mask, pixel_mm, 0.0)


def _slice_diameters(mask: np.ndarray, pixel_mm: Sequence[float], beat: float) -> Optional[SliceDiameters]:
    """As :func:`slice_diameters`, or None when the product cannot exceed ``beat`` (mm², 0 = any)."""
    padded = np.pad(np.asarray(mask, dtype=bool), 1)  # samples just outside the mask read False
    points = np.argwhere(padded & ~ndimage.binary_erosion(padded, structure=np.ones((3, 3), dtype=bool)))
    scale = np.asarray(pixel_mm, dtype=float)
    physical = points * scale
    long_pair = _hull_chord(points, physical, padded)
    if long_pair is None and len(points) > 1:
        i, j = np.triu_indices(len(points), 1)
        lengths = np.hypot(*(physical[j] - physical[i]).T)
        keep = lengths ** 2 > beat  # shorter chords cannot win: the short diameter is at most the long one
        long_pair = _longest_inside(points, i[keep], j[keep], lengths[keep], padded)
    if long_pair is None:  # a single pixel, or every long enough chord leaves the lesion
        first = _rc(points[0])
        return None if beat > 0 else SliceDiameters(0.0, 0.0, (first, first), (first, first))
    a, b = points[long_pair[0]], points[long_pair[1]]
    long_mm = float(np.hypot(*((b - a) * scale)))
    if long_mm ** 2 <= beat:
        return None
    short = _perpendicular_chord(points, physical, (b - a) * scale / long_mm, padded, beat / long_mm,
                                 physical[long_pair[0]], physical[long_pair[1]])
    if short is None and beat > 0:
        return None
    short_ends = (_rc(short[0]), _rc(short[1])) if short is not None else (_rc(a), _rc(a))
    short_mm = float(np.hypot(*((short[1] - short[0]) * scale))) if short is not None else 0.0
    return SliceDiameters(long_mm, short_mm, (_rc(a), _rc(b)), short_ends)


def _extent_mm(mask: np.ndarray, pixel_mm: Sequence[float]) -> float:
    rows, columns = np.nonzero(mask)
    return float(np.hypot(np.ptp(rows) * pixel_mm[0], np.ptp(columns) * pixel_mm[1]))


def _rc(point: np.ndarray) -> Tuple[int, int]:
    return int(point[0]) - 1, int(point[1]) - 1  # undo the padding


def _hull_chord(points: np.ndarray, physical: np.ndarray, padded: np.ndarray) -> Optional[Tuple[int, int]]:
    """The longest pair of hull vertices if its chord is inside (then it is the longest of all pairs)."""
    if len(points) < 3 or np.linalg.matrix_rank(physical - physical.mean(axis=0)) < 2:
        return None
    try:
        vertices = ConvexHull(physical).vertices
    except QhullError:
        return None
    i, j = np.triu_indices(len(vertices), 1)
    lengths = np.hypot(*(physical[vertices[j]] - physical[vertices[i]]).T)
    k = int(np.argmax(lengths))
    a, b = vertices[i[k]], vertices[j[k]]
    return (a, b) if _first_inside(points[[a]], points[[b]], padded) == 0 else None


def _perpendicular_chord(points: np.ndarray, physical: np.ndarray, direction: np.ndarray, padded: np.ndarray,
                         longer_than: float, long_start: np.ndarray,
                         long_end: np.ndarray) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The longest inside chord within the tolerance of perpendicular to ``direction`` (a unit vector),
    longer than ``longer_than`` mm, that crosses the long diameter (``long_start`` to ``long_end``, mm):
    readers draw the two diameters as a cross, and an L-shaped pair at a lesion's edge would not be
    the perpendicular diameter RANO asks for."""
    normal = np.array([-direction[1], direction[0]])
    along = physical @ direction
    across = physical @ normal
    # A near-perpendicular pair differs along the long axis by at most tan(tolerance) x its length, so
    # only points within that window of each other (points sorted along the axis) can pair up.
    window = math.tan(math.radians(PERPENDICULAR_TOLERANCE_DEGREES)) * (np.ptp(across) + 1e-9)
    order = np.argsort(along, kind="stable")
    sorted_along = along[order]
    stop = np.searchsorted(sorted_along, sorted_along + window, side="right")
    counts = stop - np.arange(len(order)) - 1
    i = np.repeat(np.arange(len(order)), counts)
    j = i + 1 + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    i, j = order[i], order[j]
    d_along, d_across = along[j] - along[i], across[j] - across[i]
    lengths = np.hypot(d_along, d_across)
    tolerance = math.sin(math.radians(PERPENDICULAR_TOLERANCE_DEGREES))
    keep = (lengths > longer_than) & (np.abs(d_along) <= lengths * tolerance)
    # Crossing: the ends lie on either side of the long diameter's line, and the crossing point lies
    # between its ends (within a hundredth of a millimetre).
    line = float(long_start @ normal)
    low, high = sorted((float(long_start @ direction), float(long_end @ direction)))
    side_i, side_j = across[i] - line, across[j] - line
    with np.errstate(divide="ignore", invalid="ignore"):
        at = along[i] + (along[j] - along[i]) * np.where(d_across != 0, -side_i / d_across, 0.0)
    keep &= (side_i * side_j <= 0) & (at >= low - 1e-2) & (at <= high + 1e-2)
    pair = _longest_inside(points, i[keep], j[keep], lengths[keep], padded)
    return None if pair is None else (points[pair[0]], points[pair[1]])


def _longest_inside(points: np.ndarray, i: np.ndarray, j: np.ndarray, lengths: np.ndarray,
                    padded: np.ndarray) -> Optional[Tuple[int, int]]:
    """The longest of the pairs (points[i], points[j]) whose chord stays inside, or None.

    Pairs are ranked in tiers (the longest few first, found by partial sorting) because a ring-shaped
    slice has hundreds of thousands of pairs and the answer is usually among the first few thousand.
    """
    remaining, tier = np.arange(len(lengths)), 1024
    while remaining.size:
        if remaining.size > tier:
            chosen = remaining[np.argpartition(-lengths[remaining], tier - 1)[:tier]]
        else:
            chosen = remaining
        chosen = chosen[np.argsort(-lengths[chosen], kind="stable")]
        hit = _first_inside(points[i[chosen]], points[j[chosen]], padded)
        if hit is not None:
            return int(i[chosen[hit]]), int(j[chosen[hit]])
        left = np.ones(len(lengths), dtype=bool)
        left[chosen] = False
        remaining = remaining[left[remaining]]
        tier *= 4
    return None


def _first_inside(starts: np.ndarray, ends: np.ndarray, padded: np.ndarray) -> Optional[int]:
    """Index of the first chord (in the given order) that stays inside the mask, or None."""
    batch, done = 16, 0
    while done < len(starts):
        chunk = slice(done, done + batch)
        # A cheap sampled test rejects most chords that leave; the exact test settles the rest in order.
        for candidate in np.flatnonzero(_samples_inside(starts[chunk], ends[chunk], padded)):
            if _exactly_inside(starts[done + candidate], ends[done + candidate], padded):
                return done + int(candidate)
        done += batch
        batch = min(batch * 4, 4096)  # convex lesions stop at once; ring-shaped ones need more pairs
    return None


def _samples_inside(starts: np.ndarray, ends: np.ndarray, padded: np.ndarray) -> np.ndarray:
    """Whether every sample of each chord, half a voxel apart, lies in a lesion pixel's closed square.

    Samples are taken coarse to fine (midpoint, then quarters, ...), dropping a chord at its first
    outside sample, so chords across a ring's hole cost a few samples instead of hundreds. Never
    rejects a chord that is inside; may pass one that grazes an outside pixel between samples.
    """
    a, b = starts.astype(float), ends.astype(float)
    levels = max(1, int(np.ceil(np.log2(max(np.max(np.hypot(*(b - a).T)), 1.0) / COARSE_STEP_VOXELS))))
    alive = np.arange(len(a))
    for level in range(1, levels + 1):
        t = (2 * np.arange(2 ** (level - 1)) + 1) / 2.0 ** level  # the new samples of this level
        points = a[alive, None, :] + t[None, :, None] * (b - a)[alive, None, :]
        # Every pixel whose closed square holds the point: one, or two or four on an edge or corner.
        low = np.ceil(points - 0.5 - 1e-6).astype(np.intp)
        high = np.floor(points + 0.5 + 1e-6).astype(np.intp)
        inside = (padded[low[..., 0], low[..., 1]] | padded[low[..., 0], high[..., 1]]
                  | padded[high[..., 0], low[..., 1]] | padded[high[..., 0], high[..., 1]])
        alive = alive[inside.all(axis=1)]
        if not alive.size:
            break
    result = np.zeros(len(a), dtype=bool)
    result[alive] = True
    return result


def _exactly_inside(start: np.ndarray, end: np.ndarray, padded: np.ndarray) -> bool:
    """Whether the chord crosses the interior of no outside pixel's square (slab test, no sampling).

    Candidates are the 3 x 3 pixels around samples half a voxel apart: any square the chord enters
    lies within 0.75 voxel (Chebyshev) of a sample, so within one pixel of its nearest centre.
    """
    a, d = start.astype(float), (end - start).astype(float)
    t = np.linspace(0.0, 1.0, int(np.ceil(np.hypot(*d) / COARSE_STEP_VOXELS)) + 1)
    near = np.rint(a + t[:, None] * d).astype(np.intp)
    offsets = np.array([(r, c) for r in (-1, 0, 1) for c in (-1, 0, 1)])
    pixels = np.unique((near[:, None, :] + offsets[None]).reshape(-1, 2), axis=0)
    outside = pixels[~padded[pixels[:, 0], pixels[:, 1]]].astype(float)
    if not outside.size:
        return True
    entry, leave = np.zeros(len(outside)), np.ones(len(outside))
    for axis in (0, 1):
        low, high = outside[:, axis] - 0.5 - a[axis], outside[:, axis] + 0.5 - a[axis]
        if abs(d[axis]) < 1e-12:  # parallel to this slab: inside it throughout, or never
            never = (low >= -1e-9) | (high <= 1e-9)
            leave[never] = 0.0
            continue
        t1, t2 = low / d[axis], high / d[axis]
        entry, leave = np.maximum(entry, np.minimum(t1, t2)), np.minimum(leave, np.maximum(t1, t2))
    # Touching a corner or an edge (zero length inside the square) is allowed.
    return bool(np.all((leave - entry) * np.hypot(*d) <= 1e-9))
