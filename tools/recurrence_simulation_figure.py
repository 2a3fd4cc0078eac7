"""Simulated post-treatment series beside the real progression pairs, as one PNG to compare by eye.

    python tools/recurrence_simulation_figure.py --data $GLIOMASUITE_DATA -o docs/recurrence-simulated-vs-real.png

Top rows: series simulated (gliomasuite.recurrence.simulate) from real BraTS baselines, T1ce and FLAIR at
each visit with the reader's mask outlined (red) and the true tumour (yellow). Bottom rows: TCIA
Brain-Tumor-Progression pairs (T1 post-contrast before and at progression, with their masks).
"""

import argparse
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from gliomasuite.modalities import MODALITIES  # noqa: E402
from gliomasuite.recurrence.simulate import load_baseline, simulate_series  # noqa: E402


def _window(a):
    inside = a[a > 0]
    lo, hi = (np.percentile(inside, [1, 99.5]) if inside.size else (0, 1))
    return np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("GLIOMASUITE_DATA"))
    parser.add_argument("--cases", nargs="+", default=["BraTS2021_00006", "Brats18_TCIA01_201_1", "Brats18_TCIA02_606_1"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[10, 15, 36])
    parser.add_argument("--real", nargs="+", default=["PGBM-01", "PGBM-05", "PGBM-08"])
    parser.add_argument("-o", "--output", default="docs/recurrence-simulated-vs-real.png")
    args = parser.parse_args()
    data = Path(args.data)
    rows = len(args.cases) * 2 + len(args.real)
    fig, axes = plt.subplots(rows, 4, figsize=(10, 2.6 * rows))
    r, captions = 0, []
    for case, seed in zip(args.cases, args.seeds):
        series = simulate_series(load_baseline(data / "brats" / case), np.random.default_rng(seed))
        s = series.scenario
        for m in ("t1ce", "flair"):
            i = MODALITIES.index(m)
            for v in range(4):
                ax = axes[r, v]
                z = (int(np.argmax(series.truth.sum(axis=(2, 3))[-1])) if series.truth[-1].any()
                     else int(np.argmax(series.brain.sum(axis=(1, 2)))))
                img = series.images[v, i, z]
                ax.imshow(_window(img), cmap="gray")
                if series.masks[v, z].any():
                    ax.contour(series.masks[v, z], [0.5], colors="r", linewidths=0.8)
                if series.truth[v, z].any():
                    ax.contour(series.truth[v, z], [0.5], colors="y", linewidths=0.6, linestyles="dotted")
                tag = ("REC" if series.recurrence[v] else "") + (" pseudo" if series.pseudo[v] else "")
                absent = "" if series.available[v, i] else " (absent)"
                ax.set_title(f"{case[:14]} {m}{absent}\nday {series.days[v]:.0f} {tag}", fontsize=7)
                ax.axis("off")
            r += 1
        captions.append((axes[r - 2, 0], f"D_w {s.d_white:.2f} mm2/d, rho {s.rho:.3f}/d, "
                            f"{'biopsy only, untreated' if s.biopsy_only else ('GTR' if s.gross_total else 'STR') + f', chemo {s.chemo_effect:.2f}'}"
                            f"{', pseudoprogression' if s.pseudoprogression and not s.biopsy_only else ''}"))
    for name in args.real:
        folder = data / "longitudinal" / "brain-tumor-progression" / name
        pre = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "Pre_Scan_T1.nii.gz")))
        post = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "Post_Scan_T1.nii.gz")))
        pm = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "Pre_Mask.nii.gz")))
        qm = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "Post_Mask.nii.gz")))
        z = int(np.argmax(qm.sum(axis=(1, 2))))
        for v, (img, mask, what) in enumerate(((pre, pm, "Pre (after chemoradiation)"), (post, qm, "Post (progression)"))):
            ax = axes[r, v]
            ax.imshow(_window(img[z]), cmap="gray")
            if mask[z].any():
                ax.contour(mask[z], [0.5], colors="r", linewidths=0.8)
            ax.set_title(f"{name} T1ce {what}\n{int(mask.sum())} mask voxels", fontsize=7)
            ax.axis("off")
        for v in (2, 3):
            axes[r, v].axis("off")
        r += 1
    fig.tight_layout(h_pad=2.5)
    for ax, text in captions:  # after the layout, so the captions do not shrink the panels
        box = ax.get_position()
        fig.text(box.x0, box.y1 + 0.045 * box.height * 4 / rows, text, fontsize=7)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=90)
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
