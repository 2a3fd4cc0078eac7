"""The report's pictures: key slices with the tumour's parts outlined, and a projection of the tumour.

Both are drawn from LPS-oriented arrays (z, y, x) in radiological convention: the patient's right on
the viewer's left in axial and coronal views, anterior on the left in sagittal ones, superior at the
top, and voxels shown at their true aspect. Colours are the BraTS ones of
:data:`gliomasuite.labels.SUBREGIONS` (NCR red, ED green, ET yellow). matplotlib's object API on the
Agg canvas (no ``pyplot``), as the survival plots, so Slicer's backend is never touched.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np
import SimpleITK as sitk

from ..labels import ED, ET, NCR, SUBREGIONS
from ..survival.plot import _figure, _save

VIEWS = ("axial", "coronal", "sagittal")
#: Letters at the (left, right, top, bottom) edges of each view.
EDGES = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}
COLOURS = {value: colour for value, _, _, colour in SUBREGIONS}
#: Drawing order of the projection: the necrotic core last, so it shows inside the enhancing rim.
PROJECTION_ORDER = (ED, ET, NCR)
BRAIN_GREY = (0.86, 0.86, 0.86)
DPI = 180
CROP_MARGIN = 6


def plane(volume: np.ndarray, view: str, index: Optional[int] = None) -> np.ndarray:
    """The 2D picture of an LPS (z, y, x) volume for ``view``: the slice ``index`` or, without one,
    the projection (any voxel along the viewing axis), turned so it reads as a radiologist expects."""
    axis = {"axial": 0, "coronal": 1, "sagittal": 2}[view]
    picture = volume.any(axis=axis) if index is None else np.take(volume, index, axis=axis)
    return picture if view == "axial" else picture[::-1]  # superior at the top


def pixel_aspect(spacing_xyz, view: str) -> float:
    """Height / width of one pixel of ``view`` (ITK spacing order x, y, z)."""
    sx, sy, sz = spacing_xyz
    return {"axial": sy / sx, "coronal": sz / sx, "sagittal": sz / sy}[view]


def _crop(mask: np.ndarray) -> tuple:
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return slice(None), slice(None)
    return (slice(max(rows.min() - CROP_MARGIN, 0), rows.max() + CROP_MARGIN + 1),
            slice(max(cols.min() - CROP_MARGIN, 0), cols.max() + CROP_MARGIN + 1))


def _edges(ax, view: str) -> None:
    left, right, top, bottom = EDGES[view]
    style = dict(transform=ax.transAxes, fontsize=6.5, color="#ffffff", fontweight="bold")
    ax.text(0.02, 0.5, left, ha="left", va="center", **style)
    ax.text(0.98, 0.5, right, ha="right", va="center", **style)
    ax.text(0.5, 0.98, top, ha="center", va="top", **style)
    ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)


def _legend(fig) -> None:
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(facecolor=colour, edgecolor="#333333", label=f"{short} {name.lower()}")
                        for _, short, name, colour in SUBREGIONS],
               loc="lower center", ncol=3, fontsize=7, frameon=False)


def _panels(fig, count: int = 3):
    width = 1.0 / count
    return [fig.add_axes([i * width + 0.005, 0.13, width - 0.01, 0.77]) for i in range(count)]


def draw_key_slices(image: Optional[sitk.Image], labels: sitk.Image, brain: np.ndarray, slices: Mapping,
                    path) -> None:
    """Axial, coronal and sagittal key slices of ``image`` (LPS) with the label outlines; ``slices`` is
    the report's ``key_slices`` entry."""
    lab = sitk.GetArrayViewFromImage(labels)
    grey = sitk.GetArrayViewFromImage(image) if image is not None else np.zeros(lab.shape, np.float32)
    inside = grey[brain] if brain.any() else grey.ravel()
    lo, hi = (np.percentile(inside, (0.5, 99.5)) if inside.size else (0.0, 1.0))
    fig = _figure(7.2, 2.9)
    fig.set_dpi(DPI)
    for ax, view in zip(_panels(fig), VIEWS):
        index = slices[view]["index"]
        rows, cols = _crop(plane(brain, view) | plane(lab > 0, view))
        picture = plane(grey, view, index)[rows, cols]
        part = plane(lab, view, index)[rows, cols]
        ax.set_facecolor("black")
        ax.imshow(picture, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, aspect=pixel_aspect(
            labels.GetSpacing(), view), interpolation="bilinear")
        for value, colour in COLOURS.items():
            mask = part == value
            if mask.any():
                ax.contour(mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.0)
        ax.set_xticks([])
        ax.set_yticks([])
        _edges(ax, view)
        k = slices[view]
        ax.set_title(f"{view.capitalize()} slice {k['index']} ({k['axis']} {k['position_mm']:.1f} mm)", fontsize=7.5)
    _legend(fig)
    _save(fig, path)


def draw_projection(labels: sitk.Image, brain: np.ndarray, path) -> None:
    """A 3D impression: each part of the tumour projected along the three axes within the brain's outline."""
    lab = sitk.GetArrayViewFromImage(labels)
    fig = _figure(7.2, 2.6)
    fig.set_dpi(DPI)
    for ax, view in zip(_panels(fig), VIEWS):
        silhouette = plane(brain | (lab > 0), view)
        rows, cols = _crop(silhouette)
        silhouette = silhouette[rows, cols]
        rgb = np.ones(silhouette.shape + (3,), np.float32)
        rgb[silhouette] = BRAIN_GREY
        for value in PROJECTION_ORDER:
            rgb[plane(lab == value, view)[rows, cols]] = COLOURS[value]
        ax.imshow(rgb, aspect=pixel_aspect(labels.GetSpacing(), view), interpolation="nearest")
        if silhouette.any():
            ax.contour(silhouette.astype(np.float32), levels=[0.5], colors=["#555555"], linewidths=0.7)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        left, right, top, bottom = EDGES[view]
        style = dict(transform=ax.transAxes, fontsize=6.5, color="#555555")
        ax.text(0.0, 0.5, left, ha="left", va="center", **style)
        ax.text(1.0, 0.5, right, ha="right", va="center", **style)
        ax.set_title(f"{view.capitalize()} projection", fontsize=7.5)
    _legend(fig)
    _save(fig, path)
