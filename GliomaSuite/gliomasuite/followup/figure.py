"""``followup.png``: volumes over time beside the key axial slice of each time point with its RANO lines.

The slice shown for a time point is the one its largest enhancing lesion was measured on, in the
baseline's frame, with the long (solid) and perpendicular (dashed) diameters drawn where they were
measured. Drawn with matplotlib's object API on the Agg canvas (no ``pyplot``), as the survival plots.
"""

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..survival.plot import _figure, _save

REGION_COLOURS = {"ET": "#e6b800", "TC": "#d62728", "WT": "#2ca02c"}
SHOWN_MODALITIES = ("t1ce", "flair", "t1", "t2")
NEXT_VISIT_LEVEL = 0.5
NEXT_VISIT_COLOUR = "#ff00ff"


def plot_followup(result: dict, on_base, path, recurrence_map=None) -> None:
    """The figure; ``recurrence_map`` (P(tumour at the next visit), baseline frame) is outlined at 0.5 on
    the latest time point's slice."""
    tps = result["timepoints"]
    n = len(tps)
    fig = _figure(3.0 + 2.6 * n, 4.6)
    ax = fig.add_axes([0.8 / (3.0 + 2.6 * n), 0.14, 1.9 / (3.0 + 2.6 * n), 0.72])
    days = [tp["days_from_baseline"] for tp in tps]
    x = days if all(d is not None for d in days) else list(range(n))
    for region, colour in REGION_COLOURS.items():
        ax.plot(x, [tp["volumes_cm3"][region] for tp in tps], "o-", color=colour, label=region)
    ax.set_xlabel("days from baseline" if x is days else "time point")
    ax.set_ylabel("volume (cm³)")
    ax.set_xticks(x)
    ax.set_xticklabels([str(v) for v in x], fontsize=7)
    ax.legend(fontsize=7, frameon=False)
    ax.set_title("Tumour volumes", fontsize=9)
    responses = {r["label"]: r for r in result["responses"]}
    for i, (tp, placed) in enumerate(zip(tps, on_base)):
        left = (3.0 + 2.6 * i) / (3.0 + 2.6 * n)
        axi = fig.add_axes([left, 0.14, 2.4 / (3.0 + 2.6 * n), 0.72])
        _slice_panel(axi, tp, placed, responses.get(tp["label"]), recurrence_map if i == n - 1 else None)
    _save(fig, path)


def _slice_panel(ax, tp, placed, response, recurrence_map=None) -> None:
    labels = sitk.GetArrayViewFromImage(placed["labels"])
    lesion = max(tp["lesions"], key=lambda les: (les.get("diameters") or {}).get("product_mm2", 0), default=None)
    diameters = (lesion or {}).get("diameters")
    if diameters and diameters["slice_axis"] == 2:
        k = diameters["slice_index"]
    else:  # no measured lesion: the slice with the most tumour
        k = int(np.argmax((labels > 0).sum(axis=(1, 2)))) if labels.any() else labels.shape[0] // 2
    image = next((placed["images"][m] for m in SHOWN_MODALITIES if m in placed["images"]), None)
    if image is not None:
        plane = sitk.GetArrayViewFromImage(image)[k]
        hi = np.percentile(plane[plane > 0], 99.5) if (plane > 0).any() else 1.0
        ax.imshow(plane, cmap="gray", vmin=0, vmax=hi, origin="upper")
    else:
        ax.imshow(np.zeros(labels.shape[1:]), cmap="gray", origin="upper")
    overlay = np.ma.masked_equal(labels[k], 0)
    ax.imshow(overlay, cmap="autumn", alpha=0.35, origin="upper", interpolation="nearest")
    for les in tp["lesions"]:
        d = les.get("diameters")
        if not d or d["slice_index"] != k or d["slice_axis"] != 2:
            continue
        for ends, style in ((d["long_ends_index"], "-"), (d["short_ends_index"], "--")):
            (i0, j0, _), (i1, j1, _) = ends
            ax.plot([i0, i1], [j0, j1], style, color="#00e5ff", linewidth=1.4)
    ax.set_xticks([])
    ax.set_yticks([])
    title = tp["label"] + (" (baseline)" if tp["is_baseline"] else "")
    if tp["date"]:
        title += f"\n{tp['date']}"
    if response:
        title += f"  {response['category']}{' (preliminary)' if response['preliminary'] else ''}"
    ax.set_title(title, fontsize=8)
    caption = f"axial slice {k}; SPD {tp['sum_of_products_mm2']:.0f} mm²"
    if recurrence_map is not None:
        plane = sitk.GetArrayViewFromImage(recurrence_map)[k]
        if plane.max() >= NEXT_VISIT_LEVEL:
            ax.contour(plane, [NEXT_VISIT_LEVEL], colors=NEXT_VISIT_COLOUR, linewidths=1.0)
        caption += f"\nmagenta: P(tumour at next visit) ≥ {NEXT_VISIT_LEVEL:g}"
    ax.set_xlabel(caption, fontsize=7)
