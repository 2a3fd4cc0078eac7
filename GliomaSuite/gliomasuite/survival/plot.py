"""PNG plots: a patient's survival curve against the cohort and the SOM cluster; model calibration.

Drawn with matplotlib's object API and the Agg canvas directly (no ``pyplot``), so calling these from
inside Slicer never changes Slicer's matplotlib backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

MONTH_DAYS = 365.25 / 12.0


def _figure(width=8.0, height=5.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path, stage=None) -> None:
    from ..outputs import write_file_atomically

    write_file_atomically(lambda tmp: fig.savefig(tmp, format="png"), path, ".png", stage)


def plot_patient(result: Mapping, path, stage=None) -> None:
    """The patient's Cox curve with its 95% band, the cohort's and the SOM neighbourhood's KM curves."""
    fig = _figure(8.0, 5.6)
    ax = fig.add_axes([0.09, 0.25, 0.62, 0.66])
    curve = result["curve"]
    t = np.asarray(curve["times_days"]) / MONTH_DAYS
    ax.fill_between(t, curve["lower"], curve["upper"], step=None, color="#d62728", alpha=0.18, linewidth=0,
                    label="95% band (approximate)")
    ax.plot(t, curve["survival"], color="#d62728", linewidth=2.4, label="this patient (Cox model)")
    cohort = result["cohort"]["km"]
    ax.step(np.asarray(cohort["times"]) / MONTH_DAYS, cohort["survival"], where="post", color="#444444",
            linewidth=1.6, label=f"cohort, Kaplan-Meier (n={cohort['n']})")
    hood = result["som"]["neighbourhood"]
    km = hood["km"]
    node = result["som"]["node"]
    ax.step(np.asarray(km["times"]) / MONTH_DAYS, km["survival"], where="post", color="#1f77b4", linewidth=1.6,
            linestyle="--", label=f"similar patients, SOM node {node[0] + 1},{node[1] + 1} (n={hood['n']})")
    median = result["median_survival"]
    if median["estimable"]:
        ax.axhline(0.5, color="#999999", linewidth=0.8, linestyle=":")
        ax.plot([median["months"]], [0.5], "o", color="#d62728")
        ax.annotate(f"median {median['months']:.1f} mo", (median["months"], 0.5), xytext=(-70, -14),
                    textcoords="offset points", fontsize=9, color="#d62728",
                    bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=1))
    for months, p in result["p_alive"].items():
        if p is not None:
            ax.plot([int(months)], [p["p"]], "s", color="#d62728", markersize=4)
    ax.set_xlim(0, max(t.max(), 24) * 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xticks(np.arange(0, ax.get_xlim()[1] + 1, 6))
    ax.set_xlabel("months from diagnosis")
    ax.set_ylabel("probability of being alive")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    ax.set_title(f"Survival estimate: {result['model']['variant']} model, risk group {result['risk_group']}",
                 fontsize=11)
    # Side panel: the SOM grid shaded by patients per node; the patient's node in red, the pooled
    # neighbourhood (the "similar patients" curve) outlined in blue.
    grid = result["som"]["grid"]
    counts = np.asarray(result["som"].get("grid_counts") or np.zeros(grid))
    side = fig.add_axes([0.75, 0.47, 0.22, 0.22 * 8.0 / 5.6])
    side.set_title("SOM: patient's node", fontsize=9)
    side.imshow(counts, cmap="Greys", vmin=0, vmax=max(1, counts.max()) * 1.6, origin="upper",
                extent=(-0.5, grid[1] - 0.5, grid[0] - 0.5, -0.5))
    side.set_xticks([])
    side.set_yticks([])
    radius = hood["radius"]
    from matplotlib.patches import Rectangle

    side.add_patch(Rectangle((node[1] - radius - 0.5, node[0] - radius - 0.5), 2 * radius + 1, 2 * radius + 1,
                             fill=False, edgecolor="#1f77b4", linewidth=1.5, linestyle="--"))
    side.add_patch(Rectangle((node[1] - 0.5, node[0] - 0.5), 1, 1, color="#d62728"))
    side.set_xlim(-0.5, grid[1] - 0.5)
    side.set_ylim(grid[0] - 0.5, -0.5)
    lines = [f"P(alive) {m} mo: " + ("n/a" if p is None else f"{100 * p['p']:.0f}%")
             for m, p in result["p_alive"].items()]
    fig.text(0.75, 0.40, "\n".join(["grey: patients per node"] + lines +
                                    [f"BraTS class: {result['brats_class']}"]), fontsize=8, va="top")
    fig.text(0.02, 0.02, _wrap(result["sentence"], 140), fontsize=7.2, va="bottom")
    _save(fig, path, stage)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def plot_calibration(model: Mapping, path, stage=None) -> None:
    """Predicted vs observed (Kaplan-Meier) P(alive at 12 months) by fifths of predicted risk."""
    cal = model["validation"]["calibration_12_months"]
    fig = _figure(5.0, 5.0)
    ax = fig.add_axes([0.14, 0.13, 0.8, 0.78])
    pred = [g["predicted_mean"] for g in cal["groups"]]
    obs = [g["observed_km"] for g in cal["groups"]]
    err = [[o - g["observed_lower"] for o, g in zip(obs, cal["groups"])],
           [g["observed_upper"] - o for o, g in zip(obs, cal["groups"])]]
    ax.plot([0, 1], [0, 1], color="#999999", linestyle=":", label="perfect calibration")
    ax.errorbar(pred, obs, yerr=err, fmt="o-", color="#1f77b4", capsize=3,
                label=f"groups of ~{cal['groups'][0]['n']} patients (KM 95% CI)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted P(alive at 12 months), out-of-fold")
    ax.set_ylabel("observed (Kaplan-Meier)")
    ax.set_title(f"{model['name']}: calibration at 12 months", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    _save(fig, path, stage)
