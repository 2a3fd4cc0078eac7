"""Where the segmentation is unsure: a per-voxel uncertainty map and the regions most worth checking.

The map is the disagreement between the network passes of one ``segment --uncertainty`` run: every
member of the model (the fold networks of an ensemble) on the study and on its seven mirror images
(flip test-time augmentation). For each voxel it is the largest, over the regions WT, TC and ET, of
the standard deviation of that region's probability across the passes (0: every pass agrees; 0.5:
half say certainly yes and half certainly no). How well it points at wrong voxels is measured by
cross-validation (``tools/cross_validate_segmentation.py evaluate``; the model card quotes it).

The list of regions to check groups voxels at or above :data:`UNCERTAIN_STD` by the boundary they lie
on (the region whose probability the passes disagree on most) and by connected component, and
names each by its side of the brain and its place relative to the tumour's centre, largest first.
"""

from typing import Dict, List

import numpy as np

#: Standard deviation across passes at or above which a voxel counts as uncertain in the list of regions
#: to check, set before any measurement and not tuned: e.g. passes split 95:5 between a certain yes
#: and a certain no, or spread evenly from 0.15 to 0.85.
UNCERTAIN_STD = 0.2
#: Components smaller than this (voxels of 1 mm^3) are not listed.
MIN_LISTED_VOXELS = 100
BOUNDARIES = ("the edema (whole-tumour) boundary", "the tumour-core boundary", "the enhancing-tumour boundary")


def uncertainty_from_spread(std: np.ndarray) -> np.ndarray:
    """(3, z, y, x) standard deviations of the WT/TC/ET probabilities -> (z, y, x) float32 map."""
    return std.max(axis=0).astype(np.float32)


SECTORS = (("inferior", "superior"), ("anterior", "posterior"), ("right", "left"))
#: Uncertain voxels farther than this from the labelled tumour are listed as separate spots (a lesion
#: that may have been missed or wrongly called), not as part of a boundary.
REMOTE_MM = 10.0


def uncertain_regions(std: np.ndarray, labels: np.ndarray, brain: np.ndarray, voxel_cm3: float = 0.001,
                      threshold: float = UNCERTAIN_STD, top: int = 3) -> List[Dict]:
    """The ``top`` largest uncertain regions of a prepared crop (1 mm LPS: numpy axes z superior,
    y posterior, x the patient's left; ``labels`` BraTS values).

    Uncertain voxels near the labelled tumour are grouped by the boundary they lie on and by the side
    of the tumour's centre they are on (the axis of their largest offset: superior, anterior, left...);
    those farther than :data:`REMOTE_MM` by connected component, as separate spots. Each region has
    ``boundary``, ``side`` (the patient's left or right hemisphere), ``place``, ``cm3`` and a
    ``sentence`` such as "the edema (whole-tumour) boundary, left hemisphere, on the posterior side of
    the tumour: 4.1 cm3 uncertain".
    """
    from scipy import ndimage

    u = std.max(axis=0)
    which = std.argmax(axis=0)
    uncertain = (u >= threshold) & brain
    if not uncertain.any():
        return []
    tumour = labels > 0
    brain_x = np.flatnonzero(brain.any(axis=(0, 1)))
    midline = 0.5 * (brain_x.min() + brain_x.max())

    def side(x: float) -> str:
        return "left hemisphere" if x > midline else "right hemisphere"

    found = []
    if tumour.any():
        centre = np.argwhere(tumour).mean(axis=0)
        remote = uncertain & (ndimage.distance_transform_edt(~tumour) > REMOTE_MM)
        near = uncertain & ~remote
        points = np.argwhere(near)
        offsets = points - centre
        axis = np.abs(offsets).argmax(axis=1)
        positive = offsets[np.arange(len(points)), axis] > 0
        for index, boundary in enumerate(BOUNDARIES):
            on_boundary = which[tuple(points.T)] == index
            for a in range(3):
                for sign in (False, True):
                    chosen = points[on_boundary & (axis == a) & (positive == sign)]
                    if len(chosen) >= MIN_LISTED_VOXELS:
                        found.append({"boundary": boundary, "side": side(chosen[:, 2].mean()),
                                      "place": f"on the {SECTORS[a][int(sign)]} side of the tumour",
                                      "cm3": round(float(len(chosen) * voxel_cm3), 1)})
    else:
        remote = uncertain
    components, n = ndimage.label(remote, structure=np.ones((3, 3, 3)))
    if n:
        sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
        distance = ndimage.distance_transform_edt(~tumour) if tumour.any() else None
        for label in 1 + np.flatnonzero(sizes >= MIN_LISTED_VOXELS):
            chosen = np.argwhere(components == label)
            where = (f"{float(distance[tuple(chosen.T)].min()):.0f} mm from the labelled tumour"
                     if distance is not None else "no tumour labelled")
            found.append({"boundary": "a separate spot (a lesion missed or wrongly called?)",
                          "side": side(chosen[:, 2].mean()), "place": where,
                          "cm3": round(float(len(chosen) * voxel_cm3), 1)})
    found.sort(key=lambda r: -r["cm3"])
    for region in found:
        region["sentence"] = f"{region['boundary']}, {region['side']}, {region['place']}: {region['cm3']:.1f} cm3 uncertain"
    return found[:top]
