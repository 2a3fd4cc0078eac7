"""Self-organising map of the cohort, with a Kaplan-Meier curve per node; Kaplan-Meier helpers.

As in the VRU-Net seed: a 10 x 10 grid trained with minisom on the standardised model features,
best-matching unit by Euclidean distance, Gaussian neighbourhood. Training is seeded (PCA
initialisation, fixed ``random_seed``) so the same table gives the same map.

Each node keeps its cohort members (row indices and subject ids), their event count and their
Kaplan-Meier curve. With 236 patients on 100 nodes most nodes hold 0-5 patients, too few for a
readable curve, so each node also stores a *neighbourhood* curve: the members of the nodes within
the smallest grid radius (Chebyshev rings 0, 1, 2, ...) that gathers at least ``min_members``
patients. Displays show the neighbourhood curve and say how many patients it holds.

Saved as plain JSON (the codebook weights and the node summaries); finding a patient's node needs
numpy only, not minisom.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from ..errors import GliomaSuiteError

Z95 = 1.959963984540054


def kaplan_meier(durations, events) -> dict:
    """Kaplan-Meier estimate with an exponential-Greenwood (log(-log)) 95% band, as lifelines does.

    Returns ``{"times": [0, t1, ...], "survival": [1, ...], "lower": [...], "upper": [...],
    "n": n, "events": d, "median": days or None}`` (step function: the value holds until the next time).
    """
    durations = np.asarray(durations, dtype=np.float64)
    events = np.asarray(events, dtype=np.int64)
    times, survival, lower, upper = [0.0], [1.0], [1.0], [1.0]
    s, greenwood = 1.0, 0.0
    for t in np.unique(durations):
        at_risk = int((durations >= t).sum())
        d = int(events[durations == t].sum())
        if d:
            s *= 1.0 - d / at_risk
            if at_risk > d:
                greenwood += d / (at_risk * (at_risk - d))
        if s > 0 and greenwood > 0 and s < 1:
            se = np.sqrt(greenwood) / abs(np.log(s))
            lo = s ** np.exp(Z95 * se)
            hi = s ** np.exp(-Z95 * se)
        else:
            lo = hi = s
        times.append(float(t))
        survival.append(float(s))
        lower.append(float(lo))
        upper.append(float(hi))
    surv = np.asarray(survival)
    below = np.nonzero(surv <= 0.5)[0]
    median = float(np.asarray(times)[below[0]]) if len(below) else None
    return {"times": times, "survival": survival, "lower": lower, "upper": upper,
            "n": int(len(durations)), "events": int(events.sum()), "median": median}


def km_at(curve: Mapping, t: float) -> float:
    """Value of a stored Kaplan-Meier step curve at time ``t``."""
    times = np.asarray(curve["times"])
    return float(np.asarray(curve["survival"])[np.searchsorted(times, t, side="right") - 1])


class SurvivalSOM:
    """A fitted SOM with per-node cohort members and survival (see the module docstring)."""

    def __init__(self, data: Mapping):
        if data.get("kind") != "som":
            raise GliomaSuiteError("This is not a GliomaSuite survival SOM.")
        self.data = dict(data)
        self.weights = np.asarray(data["weights"], dtype=np.float64)  # (rows, cols, features)
        self.rows, self.cols = self.weights.shape[:2]

    def to_json(self) -> dict:
        return dict(self.data)

    def bmu(self, z: np.ndarray) -> tuple:
        """Best-matching unit (row, col) of one standardised feature vector (Euclidean distance)."""
        z = np.asarray(z, dtype=np.float64).reshape(-1)
        if z.shape[0] != self.weights.shape[2]:
            raise GliomaSuiteError(f"The SOM expects {self.weights.shape[2]} features, got {z.shape[0]}.")
        distance = np.linalg.norm(self.weights - z, axis=2)
        row, col = np.unravel_index(int(np.argmin(distance)), distance.shape)
        return int(row), int(col)

    def node(self, row: int, col: int) -> dict:
        return self.data["nodes"][row * self.cols + col]

    def grid_counts(self) -> np.ndarray:
        """(rows, cols) array of member counts, for drawing the grid."""
        return np.array([[self.node(r, c)["n"] for c in range(self.cols)] for r in range(self.rows)])


def fit_som(z: np.ndarray, durations, events, subject_ids: Optional[Sequence[str]] = None,
            rows: int = 10, cols: int = 10, sigma: float = 1.5, learning_rate: float = 0.5,
            iterations: int = 5000, seed: int = 0, min_members: int = 15) -> SurvivalSOM:
    """Train a seeded minisom SOM on standardised features ``z`` (n, p) and summarise each node."""
    from minisom import MiniSom

    z = np.asarray(z, dtype=np.float64)
    durations = np.asarray(durations, dtype=np.float64)
    events = np.asarray(events, dtype=np.int64)
    n = len(durations)
    som = MiniSom(rows, cols, z.shape[1], sigma=sigma, learning_rate=learning_rate,
                  neighborhood_function="gaussian", activation_distance="euclidean", random_seed=seed)
    som.pca_weights_init(z)
    som.train(z, iterations, random_order=True)
    weights = som.get_weights().astype(np.float64)
    model = SurvivalSOM({"kind": "som", "weights": weights.tolist(), "nodes": []})
    bmus = [model.bmu(v) for v in z]
    ids = list(subject_ids) if subject_ids is not None else [str(i) for i in range(n)]
    members = {(r, c): [] for r in range(rows) for c in range(cols)}
    for i, (r, c) in enumerate(bmus):
        members[(r, c)].append(i)
    nodes = []
    for r in range(rows):
        for c in range(cols):
            own = members[(r, c)]
            node = {"row": r, "col": c, "members": own, "subject_ids": [ids[i] for i in own], "n": len(own),
                    "events": int(events[own].sum()) if own else 0,
                    "km": kaplan_meier(durations[own], events[own]) if own else None}
            for radius in range(max(rows, cols)):
                pooled = [i for (rr, cc), m in members.items()
                          if max(abs(rr - r), abs(cc - c)) <= radius for i in m]
                if len(pooled) >= min(min_members, n):
                    break
            node["neighbourhood"] = {"radius": radius, "n": len(pooled), "events": int(events[pooled].sum()),
                                     "km": kaplan_meier(durations[pooled], events[pooled])}
            nodes.append(node)
    # Quality of the map: mean distance to the BMU, and share of samples whose two best units are
    # not neighbours (topographic error).
    distance = np.linalg.norm(weights[None, :, :, :] - z[:, None, None, :], axis=3).reshape(n, -1)
    order = np.argsort(distance, axis=1)[:, :2]
    first = np.column_stack(np.unravel_index(order[:, 0], (rows, cols)))
    second = np.column_stack(np.unravel_index(order[:, 1], (rows, cols)))
    topographic = float(np.mean(np.max(np.abs(first - second), axis=1) > 1))
    model.data.update({
        "nodes": nodes, "rows": rows, "cols": cols,
        "training": {"library": "minisom", "sigma": sigma, "learning_rate": learning_rate,
                     "iterations": iterations, "seed": seed, "init": "pca", "neighbourhood": "gaussian",
                     "distance": "euclidean", "min_members_for_neighbourhood_curve": min_members},
        "quantization_error": float(distance.min(axis=1).mean()),
        "topographic_error": topographic,
        "occupied_nodes": int(sum(1 for nd in nodes if nd["n"])),
    })
    return model
