"""What the recurrence network sees of one time point, the same for simulated and real series.

Per visit, channels: the four sequences (T1, T1ce, T2, FLAIR) each divided by its median inside the
head and shifted so that median is 0 (intensity drift and scanner scale fall away; an absent sequence
is all zeros), one flag per sequence saying whether it is there, the reader's or segmenter's tumour
mask, and the days since the previous visit / 100 (0 at the first). 10 channels in all.
"""

import numpy as np

from ..modalities import MODALITIES

CHANNELS_PER_VISIT = 2 * len(MODALITIES) + 2
#: Channel layout per visit: the sequences, their flags, the mask, the interval.
IMAGE_CHANNELS = tuple(range(len(MODALITIES)))
MASK_CHANNEL = 2 * len(MODALITIES)
DAYS_SCALE = 100.0
#: Intervals the model was trained on (simulated visits are 2-4 months apart, the first 3-8 weeks after RT).
MAX_INTERVAL_DAYS = 200.0


def normalise(image: np.ndarray) -> np.ndarray:
    inside = image > 0
    if inside.sum() < 100:
        return np.zeros_like(image, dtype=np.float32)
    median = float(np.median(image[inside]))
    return np.clip(np.where(inside, image / median - 1.0, -1.0), -1.0, 6.0).astype(np.float32)


def visit_channels(images: np.ndarray, available: np.ndarray, mask: np.ndarray, days_since_previous: float) -> np.ndarray:
    """(10, Z, Y, X) float32 for one visit; ``images`` (4, Z, Y, X) in MODALITIES order."""
    shape = mask.shape
    out = np.zeros((CHANNELS_PER_VISIT,) + shape, np.float32)
    for i in range(len(MODALITIES)):
        if available[i]:
            out[i] = normalise(images[i])
            out[len(MODALITIES) + i] = 1.0
    out[MASK_CHANNEL] = mask > 0
    out[MASK_CHANNEL + 1] = days_since_previous / DAYS_SCALE
    return out


def series_inputs(images, available, masks, days) -> np.ndarray:
    """(T, 10, Z, Y, X) for visits in date order; ``days`` are days from any fixed origin."""
    gaps = np.diff(np.asarray(days, np.float64), prepend=days[0])
    return np.stack([visit_channels(images[t], available[t], masks[t], float(gaps[t])) for t in range(len(days))])
