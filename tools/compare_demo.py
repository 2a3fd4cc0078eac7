#!/usr/bin/env python
"""Render the synthetic demo study next to a real BraTS case, to judge by eye that it looks right.

For each study it shows the axial and coronal slices through the tumour's centre of all four
contrasts, plus the label overlay (NCR red, ED green, ET yellow), each contrast windowed to its own
0.5-99.5 percentile inside the brain, in radiological convention (patient's right on the left),
and prints per-tissue means so the brightness ordering can be checked in numbers too.

    PYTHONPATH=GliomaSuite python tools/compare_demo.py --out /tmp/demo_compare.png [--seed 0]
        [--case BraTS2021_01476]

Real cases are read from $GLIOMASUITE_DATA/brats (default /work/shared/data/brats). Never commit
the PNG: it shows patient data.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "GliomaSuite"))
from gliomasuite import demo  # noqa: E402
from gliomasuite.labels import ED, ET, NCR, SUBREGIONS  # noqa: E402

MODALITIES = ("t1", "t1ce", "t2", "flair")


def read_study(folder: pathlib.Path, stem: str) -> dict:
    out = {}
    for key in MODALITIES + ("seg",):
        img = sitk.ReadImage(str(folder / f"{stem}_{key}.nii.gz"))
        out[key] = sitk.GetArrayFromImage(img)
        out.setdefault("_geometry", (img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection()))
    return out


def window(a: np.ndarray, brain: np.ndarray):
    lo, hi = np.percentile(a[brain], [0.5, 99.5])
    return lo, hi


def overlay(ax, base, seg, vmin, vmax, origin):
    ax.imshow(base, cmap="gray", vmin=vmin, vmax=vmax, origin=origin, interpolation="nearest")
    rgba = np.zeros(seg.shape + (4,), dtype=float)
    for value, _short, _name, colour in SUBREGIONS:
        rgba[seg == value, :3] = colour
        rgba[seg == value, 3] = 0.45
    ax.imshow(rgba, origin=origin, interpolation="nearest")


def tissue_means(study: dict) -> str:
    """Rough tissue classes from T1 outside the tumour (terciles of brain voxels) + tumour labels."""
    seg = study["seg"]
    brain = (study["t1"] > 0) & (seg == 0)
    t1 = study["t1"].astype(float)
    q1, q2 = np.percentile(t1[brain], [20, 70])
    classes = {"dark(CSF-ish)": brain & (t1 < q1), "mid(GM-ish)": brain & (t1 >= q1) & (t1 < q2),
               "bright(WM-ish)": brain & (t1 >= q2)}
    classes.update({"NCR": seg == NCR, "ED": seg == ED, "ET": seg == ET})
    lines = []
    for m in MODALITIES:
        a = study[m].astype(float)
        wm_level = a[classes["bright(WM-ish)"]].mean()
        parts = [f"{name}={a[mask].mean() / wm_level:4.2f}" for name, mask in classes.items() if mask.any()]
        lines.append(f"  {m:5s} (relative to WM-ish) " + " ".join(parts))
    return "\n".join(lines)


def render(studies: dict, out: str, zoom=None) -> None:
    """Rows: axial and coronal through the tumour centre per study; ``zoom`` mm crops around it."""
    fig, axes = plt.subplots(2 * len(studies), 5, figsize=(20, 8.5 * len(studies)), facecolor="black")
    row = 0
    for title, st in studies.items():
        seg = st["seg"]
        brain = st["t1"] > 0
        zc, yc, xc = (int(round(c)) for c in np.argwhere(seg > 0).mean(0))
        h = zoom // 2 if zoom else None

        def crop2(a, c0, c1):
            if not h:
                return a
            return a[max(c0 - h, 0):c0 + h, max(c1 - h, 0):c1 + h]

        views = (
            (lambda a: crop2(a[zc], yc, xc), "upper", "axial"),
            (lambda a: crop2(a[:, yc, :], zc, xc), "lower", "coronal"),
        )
        for view, (sl, origin, name) in enumerate(views):
            for col, m in enumerate(MODALITIES):
                ax = axes[row + view, col]
                vmin, vmax = window(st[m], brain)
                ax.imshow(sl(st[m]), cmap="gray", vmin=vmin, vmax=vmax, origin=origin, interpolation="nearest")
                ax.set_title(f"{title}: {m} {name}", color="w", fontsize=10)
            vmin, vmax = window(st["flair"], brain)
            overlay(axes[row + view, 4], sl(st["flair"]), sl(seg), vmin, vmax, origin)
            axes[row + view, 4].set_title(f"{title}: labels on FLAIR", color="w", fontsize=10)
        row += 2
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=70, facecolor="black")
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "gliomasuite_demo_compare.png"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zoom", type=int, default=110, help="side (mm) of the close-up PNG's crops")
    parser.add_argument("--case", default=None, help="BraTS case folder name (default: first with a seg)")
    args = parser.parse_args(argv)

    data_root = pathlib.Path(os.environ.get("GLIOMASUITE_DATA", "/work/shared/data")) / "brats"
    if args.case:
        case = data_root / args.case
    else:
        case = next(p for p in sorted(data_root.iterdir()) if list(p.glob("*_seg.nii.gz")))

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        demo.make_demo_study(tmp, seed=args.seed)
        elapsed = time.perf_counter() - t0
        studies = {f"demo (seed {args.seed})": read_study(pathlib.Path(tmp), demo.DEMO_PREFIX),
                   f"real {case.name}": read_study(case, case.name)}
    print(f"make_demo_study: {elapsed:.1f} s")

    for title, st in studies.items():
        print(title, "geometry (size, spacing, origin, direction):", st["_geometry"])
        print(tissue_means(st))
    render(studies, args.out, zoom=None)
    print("wrote", args.out)
    zoom_out = str(pathlib.Path(args.out).with_suffix("")) + "_zoom.png"
    render(studies, zoom_out, zoom=args.zoom)
    print("wrote", zoom_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
