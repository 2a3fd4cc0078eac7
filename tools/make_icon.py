"""Draw the GliomaSuite icon: an axial brain slice with a segmented glioma.

The icon is drawn from shapes rather than kept only as a binary so that anyone can change it and
get the same pixels back. It shows what the module does at a glance: a T1-like axial slice (bright
white matter inside darker folded cortex, the midline fissure, the ventricles) and, in one
hemisphere, the three BraTS sub-regions in the colours the module gives its segments: green edema,
a yellow enhancing rim and a red necrotic core.

Usage (from the repository root)::

    python tools/make_icon.py

writes ``GliomaSuite.png`` (extension icon) and ``GliomaSuite/Resources/Icons/GliomaSuite.png``
(module icon), both 128 x 128 RGBA with a transparent background.
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

SIZE = 128
#: Each output pixel averages SUPERSAMPLE x SUPERSAMPLE binary samples: smooth edges, no blur.
SUPERSAMPLE = 8

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = (
    REPO_ROOT / "GliomaSuite.png",
    REPO_ROOT / "GliomaSuite" / "Resources" / "Icons" / "GliomaSuite.png",
)

OUTLINE = (0.16, 0.18, 0.23)
GREY_MATTER = (0.55, 0.56, 0.59)
WHITE_MATTER = (0.86, 0.86, 0.87)
CSF = (0.20, 0.21, 0.25)
EDEMA = (0.16, 0.75, 0.30)
ENHANCING = (1.00, 0.84, 0.10)
NECROTIC = (0.86, 0.12, 0.16)


def _grid():
    """Sample coordinates in output-pixel units (0..SIZE), one sample per sub-pixel centre."""
    n = SIZE * SUPERSAMPLE
    coords = (np.arange(n) + 0.5) / SUPERSAMPLE
    return np.meshgrid(coords, coords)  # x, y; y grows downwards as in the image


def _blob(x, y, cx, cy, rx, ry, wobble=()):
    """Inside of an ellipse whose radius is modulated by (harmonic, amplitude, phase) terms.

    Pure ellipses look like a diagram; a few low harmonics make the shape read as anatomy.
    """
    dx, dy = (x - cx) / rx, (y - cy) / ry
    radius = np.hypot(dx, dy)
    angle = np.arctan2(dy, dx)
    boundary = np.ones_like(angle)
    for harmonic, amplitude, phase in wobble:
        boundary += amplitude * np.cos(harmonic * angle + phase)
    return radius <= boundary


def draw_icon() -> np.ndarray:
    """The icon as a SIZE x SIZE x 4 uint8 RGBA array."""
    x, y = _grid()
    cx, cy = SIZE / 2, SIZE / 2 + 1
    angle = np.arctan2(y - cy, x - cx)

    # Axial brain outline: a little wider at the back (bottom of the image) than at the front,
    # with the notches where the two hemispheres meet at the front and the back.
    brain = _blob(x, y, cx, cy, 51, 58, ((2, 0.035, 0.0), (1, 0.03, -np.pi / 2)))
    for tip_y, direction in ((cy - 59, 1), (cy + 60, -1)):
        depth = (tip_y + direction * 9 - y) * direction  # > 0 inside the notch's height
        brain &= ~((depth > 0) & (np.abs(x - cx) < 0.45 * depth))
    depth_inside = ndimage.distance_transform_edt(brain) / SUPERSAMPLE
    rim = ndimage.distance_transform_edt(~brain) / SUPERSAMPLE <= 2.6

    # Folded cortex: white matter reaches into each gyrus as a finger, the cortex is thick between.
    # An irregular angle spacing keeps the folds from looking like gear teeth.
    folds = 21 * angle + 2.2 * np.sin(3 * angle + 0.5) + 1.3 * np.sin(5 * angle + 2.0)
    finger = np.abs(np.cos(folds / 2)) ** 3
    white = depth_inside > 10.5 - 6.5 * finger
    # Rounded gyri, not spikes: smooth the boundary at about 1.5 output pixels.
    white = ndimage.gaussian_filter(white.astype(float), 1.5 * SUPERSAMPLE) > 0.5
    fissure = (np.abs(x - cx) < 0.9) & (np.abs(y - cy) > 30) & brain
    # Lateral ventricles as the ")(" of the frontal horns: each a crescent, the caudate head
    # indenting it from the side, the pair opening towards the front.
    ventricles = np.zeros_like(brain)
    for side in (-1, 1):
        tilt = -np.deg2rad(14) * side
        u = cx + (x - cx) * np.cos(tilt) - (y - cy) * np.sin(tilt)
        v = cy + (x - cx) * np.sin(tilt) + (y - cy) * np.cos(tilt)
        horn = _blob(u, v, cx + 6.5 * side, cy + 9, 5, 13)
        caudate = _blob(u, v, cx + 12.5 * side, cy + 10, 5, 8)
        ventricles |= horn & ~caudate
    ventricles &= np.abs(x - cx) > 1.2  # septum pellucidum

    # Glioma in the right hemisphere of the image, frontal; its regions nested as in BraTS.
    tx, ty = cx + 25, cy - 18
    rim_shape = ((3, 0.08, 1.1), (4, 0.05, 0.2))
    edema = _blob(x, y, tx, ty, 20, 19, ((3, 0.10, 0.4), (5, 0.05, 1.3), (2, 0.06, 2.0))) & brain
    edema &= x > cx + 1.5  # the falx stops it at the midline
    enhancing = _blob(x, y, tx + 1, ty + 1, 13, 12.5, rim_shape)
    enhancing_outline = _blob(x, y, tx + 1, ty + 1, 14.8, 14.3, rim_shape) & brain
    necrotic = _blob(x, y, tx + 1.5, ty + 1.5, 7.2, 6.9, ((3, 0.10, 2.2),))

    layers = (
        (rim, OUTLINE),
        (brain, GREY_MATTER),
        (white, WHITE_MATTER),
        (ventricles | fissure, CSF),
        (edema, EDEMA),
        (enhancing_outline, OUTLINE),
        (enhancing, ENHANCING),
        (necrotic, NECROTIC),
    )
    rgb = np.zeros(x.shape + (3,))
    alpha = np.zeros(x.shape)
    for mask, colour in layers:  # binary masks: painting in order is exact per sample
        rgb[mask] = colour
        alpha[mask] = 1.0

    # Average premultiplied colour over each output pixel, then un-premultiply.
    def pool(a):
        return a.reshape(SIZE, SUPERSAMPLE, SIZE, SUPERSAMPLE, *a.shape[2:]).mean(axis=(1, 3))

    coverage = pool(alpha)
    colour = pool(rgb * alpha[..., None]) / np.maximum(coverage, 1e-9)[..., None]
    rgba = np.concatenate([colour, coverage[..., None]], axis=-1)
    return np.round(np.clip(rgba, 0, 1) * 255).astype(np.uint8)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outputs", nargs="*", type=Path, default=OUTPUTS, help="PNG files to write")
    args = parser.parse_args(argv)
    image = Image.fromarray(draw_icon(), mode="RGBA")
    for path in args.outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, optimize=True)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
