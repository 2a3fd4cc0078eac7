"""Simulated series on disk, and the training samples cut from them.

Each series is simulated once (seeded by its baseline and number, so a rerun makes the same file) and
kept as a compressed ``.npz`` of float16 images and uint8 masks: no pickle, nothing executable.
A sample is a run of visits j..k of a series (k - j >= 1, k < the last visit): the network sees them,
is asked whether visit k shows recurrence, and where the true tumour is at visit k+1. Windows that
start after the post-operative scan (j = 1, the scan after radiotherapy) are there because RANO 2.0
takes the post-radiotherapy scan as the baseline, so that is where a user's series often starts.
"""

import hashlib
import json
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence

import numpy as np

from ..errors import GliomaSuiteError
from .simulate import SIMULATOR_VERSION, SimulatedSeries, load_baseline, simulate_series


#: (first, last) visit of each sample taken from a series of four visits.
WINDOWS = ((0, 1), (0, 2), (1, 2))


def _seed(case: str, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{case}/{index}".encode()).digest()[:8], "little")


def series_path(folder: Path, case: str, index: int) -> Path:
    return Path(folder) / f"{case}-{index:03d}.npz"


def simulate_cases(data_dir, cases: Sequence[str], per_case: int, folder,
                   progress: Callable[[float, str], None] = lambda f, m: None) -> List[Path]:
    """Simulate ``per_case`` series from each case in ``data_dir`` into ``folder`` (files kept from a previous run)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    total = len(cases) * per_case
    for ci, case in enumerate(cases):
        todo = [i for i in range(per_case) if not _valid(series_path(folder, case, i))]
        baseline = load_baseline(Path(data_dir) / case) if todo else None
        for i in range(per_case):
            path = series_path(folder, case, i)
            if i in todo:
                series = simulate_series(baseline, np.random.default_rng(_seed(case, i)))
                save_series(series, path, case)
            paths.append(path)
            progress((ci * per_case + i + 1) / total, f"Simulated {case} series {i + 1}/{per_case}")
    return paths


def _valid(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
        return meta.get("simulator") == SIMULATOR_VERSION
    except Exception:  # a truncated file from a killed run is simulated again
        return False


def save_series(series: SimulatedSeries, path: Path, case: str) -> None:
    s = series.scenario
    meta = {"simulator": SIMULATOR_VERSION, "case": case,
            "scenario": {k: v for k, v in vars(s).items() if k != "available"} if s else {}}
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, images=series.images.astype(np.float16), available=series.available,
                            masks=series.masks, truth=series.truth, days=series.days, recurrence=series.recurrence,
                            pseudo=series.pseudo, brain=series.brain,
                            meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    tmp.replace(path)


def load_series(path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        out = {k: data[k] for k in data.files if k != "meta"}
        out["meta"] = json.loads(bytes(data["meta"]).decode())
    out["images"] = out["images"].astype(np.float32)
    return out


#: Share of augmented training samples whose scans are given thick slices (see :func:`thick_slices`).
THICK_SLICE_SHARE = 0.35
#: Slice spacings drawn for them, in network voxels (2 mm): 4, 6 or 8 mm apart.
THICK_SLICE_VOXELS = (2, 3, 4)


def thick_slices(x: np.ndarray, spacing: int, offset: int, axis: int = 2) -> np.ndarray:
    """``x`` (T, C, Z, Y, X) series inputs as if each scan had been acquired in slices ``spacing`` voxels
    apart and as thick (each slice the mean of its slab), then interpolated linearly back to the grid, as the
    follow-up's resampling does with a clinical 2D scan (many post-treatment T1ce scans have 5 mm slices;
    the simulations are made at 2 mm). Image and mask channels are degraded; the mask is re-thresholded at
    0.5; flags and intervals are left alone."""
    from scipy.ndimage import uniform_filter1d

    from .inputs import IMAGE_CHANNELS, MASK_CHANNEL

    n = x.shape[axis]
    centres = np.arange(offset % spacing, n, spacing)
    if len(centres) < 2:
        return x
    position = np.clip(np.arange(n, dtype=np.float64), centres[0], centres[-1])
    upper = np.clip(np.searchsorted(centres, position, side="right"), 1, len(centres) - 1)
    lower = upper - 1
    shape = [1] * x.ndim
    shape[axis] = n
    weight = ((position - centres[lower]) / (centres[upper] - centres[lower])).astype(np.float32).reshape(shape)
    channels = list(IMAGE_CHANNELS) + [MASK_CHANNEL]
    sampled = np.take(uniform_filter1d(x[:, channels], size=spacing, axis=axis, mode="nearest"), centres, axis=axis)
    value = np.take(sampled, lower, axis=axis) * (1 - weight) + np.take(sampled, upper, axis=axis) * weight
    value[:, -1] = value[:, -1] >= 0.5  # the mask
    out = x.copy()
    out[:, channels] = value
    return out


class SeriesSamples:
    """Training samples (visits j..k of a series, (j, k) in ``windows``) as tensors for :class:`RecurrenceNet`.

    ``augment``: left-right and front-back flips, and for :data:`THICK_SLICE_SHARE` of the samples
    :func:`thick_slices` along the axial axis (``thick_share`` overrides the share)."""

    def __init__(self, paths: Iterable[Path], windows=WINDOWS, augment: bool = False, seed: int = 0,
                 thick_share: Optional[float] = None):
        self.series = [load_series(p) for p in paths]
        self.items = [(i, window) for i in range(len(self.series)) for window in windows]
        self.augment = augment
        self.thick_share = THICK_SLICE_SHARE if thick_share is None else thick_share
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.items)

    def sample(self, index: int):
        from .inputs import series_inputs

        i, (j, k) = self.items[index]
        s = self.series[i]
        x = series_inputs(s["images"][j:k + 1], s["available"][j:k + 1], s["masks"][j:k + 1], s["days"][j:k + 1])
        target = s["truth"][k + 1].astype(np.float32)[None]
        if self.augment and self.thick_share and self.rng.random() < self.thick_share:
            spacing = int(self.rng.choice(THICK_SLICE_VOXELS))
            x = thick_slices(x, spacing, int(self.rng.integers(spacing)))
        if self.augment:  # left-right and front-back flips: a tumour's side says nothing of its course
            for axis in (2, 3):
                if self.rng.random() < 0.5:
                    x = np.flip(x, axis=axis + 1)
                    target = np.flip(target, axis=axis)
        return (np.ascontiguousarray(x), np.float32(s["recurrence"][k]), np.ascontiguousarray(target))


def split_cases(cases: Sequence[str], validation: Optional[Sequence[str]]) -> tuple:
    unknown = sorted(set(validation or ()) - set(cases))
    if unknown:
        raise GliomaSuiteError(f"--validation names {', '.join(unknown)}, which are not labelled cases of the data "
                               f"folder (known: {', '.join(cases[:5])}...); name baseline case folders.")
    held = list(validation or ())
    return [c for c in cases if c not in held], held
