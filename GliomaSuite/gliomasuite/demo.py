"""The built-in demo case: a synthetic, BraTS-like glioma study that contains no patient data.

:func:`make_demo_study` writes four co-registered MRI contrasts (T1, T1ce, T2, FLAIR) and their
ground-truth label map, named the BraTS 2021 way (``GliomaDemo_t1.nii.gz`` ... ``GliomaDemo_seg.nii.gz``),
so that every part of GliomaSuite (loading, segmentation, follow-up, reports, the Slicer self-test)
can run without anyone's scans.

How it is made
--------------
* **Anatomy** is a real healthy brain: the ICBM 2009a nonlinear symmetric MNI152 template and its
  grey- and white-matter probability maps, which the ``nilearn`` package ships inside its wheel
  (read straight from the installed package; nothing is downloaded). CSF is the brain mask minus
  grey and white matter. The template is mapped onto the BraTS grid (240 x 240 x 155 voxels,
  1 mm, the direction and origin SimpleITK reads from BraTS files) by a seed-dependent scaling,
  small rotation and shift, which also shrinks it to the size of a typical BraTS brain and cuts
  the lower brain stem at the bottom of the field of view as BraTS volumes do.
* **Tumour** is an irregular (noise-deformed) glioma in the deep white matter of one hemisphere:
  necrotic core (label 1) inside an enhancing rim of uneven thickness (label 4), surrounded by
  vasogenic edema (label 2) grown from the core preferentially along white matter (a geodesic
  dilation through white matter, so it makes finger-like extensions and spares the cortex and
  ventricles), plus mild mass effect that pushes the surrounding anatomy outwards.
* **Contrasts** are partial-volume mixtures of per-tissue intensities chosen to match BraTS
  scans: T1 WM > GM > CSF; T1ce like T1 with a bright enhancing rim and a dark necrotic core;
  T2 CSF brightest, edema and necrosis bright; FLAIR CSF suppressed, edema bright. Each contrast
  gets a fine tissue texture, a smooth multiplicative bias field and Rician noise, is zero outside
  the brain (skull-stripped) and is stored as int16 like BraTS.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed gives byte-identical
arrays, another seed a different brain placement, tumour and intensity scale.
"""

from __future__ import annotations

import importlib.util
import pathlib
from typing import Dict, Union

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from .errors import GliomaSuiteError
from .labels import ED, ET, NCR

#: File name prefix of the demo study.
DEMO_PREFIX = "GliomaDemo"
#: Modalities written, in GliomaSuite channel order.
DEMO_MODALITIES = ("t1", "t1ce", "t2", "flair")

#: The BraTS grid in SimpleITK terms (x, y, z order): what SimpleITK reads from BraTS 2021 files.
GRID_SIZE = (240, 240, 155)
GRID_SPACING = (1.0, 1.0, 1.0)
GRID_ORIGIN = (0.0, -239.0, 0.0)
GRID_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

_TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}

# Per-tissue intensities (BraTS-like arbitrary units) for csf, gm, wm, edema, necrosis, enhancing.
_TISSUES = ("csf", "gm", "wm", "ed", "ncr", "et")
_INTENSITY = {
    "t1": (380.0, 1040.0, 1380.0, 1100.0, 760.0, 1150.0),
    "t1ce": (420.0, 1000.0, 1260.0, 1000.0, 600.0, 2500.0),
    "t2": (1950.0, 900.0, 770.0, 1650.0, 2000.0, 1300.0),
    "flair": (260.0, 970.0, 880.0, 1900.0, 1350.0, 1500.0),
}

# Centre of the MNI template brain (LPS, mm) and where a BraTS brain centre sits on the BraTS grid
# (voxel index x, y, z); the scale shrinks the MNI brain to a typical BraTS (SRI24) brain.
_MNI_CENTRE = np.array([0.0, 22.0, 9.5])
_GRID_CENTRE_INDEX = np.array([119.0, 130.0, 69.0])
_MNI_TO_BRATS_SCALE = np.array([0.94, 0.92, 0.93])


def demo_paths(out_dir: Union[str, pathlib.Path]) -> Dict[str, pathlib.Path]:
    """The files :func:`make_demo_study` writes, keyed by modality (plus ``"seg"``)."""
    out_dir = pathlib.Path(out_dir)
    return {key: out_dir / f"{DEMO_PREFIX}_{key}.nii.gz" for key in DEMO_MODALITIES + ("seg",)}


def make_demo_study(out_dir: Union[str, pathlib.Path], seed: int = 0, tumour: bool = True, growth: float = 1.0,
                    motion=None) -> pathlib.Path:
    """Write the synthetic BraTS-like demo study (four contrasts + truth) into ``out_dir``.

    Returns ``out_dir``. The same ``seed`` always gives the same voxel arrays. ``tumour=False``
    gives the same kind of brain without a tumour (an all-zero truth): what "no tumour" looks like.
    A follow-up scan of the same patient: the same ``seed`` with ``growth`` (the tumour's radius and
    edema reach scaled, same brain, same place) and ``motion`` (``(rotation_deg_xyz, shift_mm)``, the
    head placed otherwise in the scanner: the images are resampled by that rigid motion).
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images, seg = synthesize_demo_arrays(seed, tumour=tumour, growth=growth)
    paths = demo_paths(out_dir)
    for key, array in list(images.items()) + [("seg", seg)]:
        image = _to_image(array)
        if motion is not None:
            image = _moved(image, motion, is_label=key == "seg")
        sitk.WriteImage(image, str(paths[key]), True)
    return out_dir


def _moved(image: sitk.Image, motion, is_label: bool) -> sitk.Image:
    """``image`` as the scanner would see the head moved rigidly by ``motion`` about the grid centre."""
    degrees, shift = motion
    transform = sitk.Euler3DTransform()
    transform.SetCenter(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))
    transform.SetRotation(*np.deg2rad(degrees))
    transform.SetTranslation(tuple(float(v) for v in shift))
    interpolator = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    moved = sitk.Resample(image, image, transform, interpolator, 0, sitk.sitkFloat32)
    return sitk.Cast(sitk.Round(moved), image.GetPixelID())


def synthesize_demo_arrays(seed: int = 0, return_tissues: bool = False, tumour: bool = True, growth: float = 1.0):
    """The demo study as numpy arrays in SimpleITK order (z, y, x).

    Returns ``(images, seg)``: ``{modality: int16 array}`` and the uint8 BraTS label map. With
    ``return_tissues`` also a third item, ``{"gm", "wm", "csf": float32 fractions}`` of the normal
    tissue on the full grid after the mass effect (the truth behind the contrasts, for tests).
    """
    rng = np.random.default_rng(seed)
    anatomy = _anatomy_on_grid(rng)  # tissue fractions on the brain's bounding box of the grid
    crop, mask = anatomy["crop"], anatomy["mask"]
    gm_a, wm_a, csf_a = anatomy["gm"], anatomy["wm"], anatomy["csf"]
    lesion = _make_tumour(rng, anatomy, growth) if tumour else None
    labels = lesion["labels"] if tumour else np.zeros(mask.shape, dtype=np.uint8)

    images = {}
    shape_full = GRID_SIZE[::-1]
    texture = _smooth_noise(rng, mask.shape, 1.2)
    texture *= 0.02
    scale_global = rng.uniform(0.8, 1.25)
    for modality in DEMO_MODALITIES:
        levels = np.array(_INTENSITY[modality]) * scale_global * rng.uniform(0.96, 1.04, len(_TISSUES))
        lv = {name: float(level) for name, level in zip(_TISSUES, levels)}
        normal = gm_a * lv["gm"] + wm_a * lv["wm"] + csf_a * lv["csf"]
        img = _apply_tumour(normal, lesion, lv) if tumour else normal
        img *= 1.0 + texture
        img *= _bias_field(rng, mask.shape, amplitude=0.06)
        # Rician noise, then the slight blur of BraTS' resampling to 1 mm
        sigma = 0.03 * max(lv["wm"], lv["gm"])
        vals = img[mask]
        n1 = rng.standard_normal(vals.shape, dtype=np.float32) * sigma
        n2 = rng.standard_normal(vals.shape, dtype=np.float32) * sigma
        img[mask] = np.sqrt((vals + n1) ** 2 + n2**2)
        del vals, n1, n2
        img = ndi.gaussian_filter(img, 0.6, mode="constant")
        img[mask] = np.maximum(img[mask], 1.0)  # every contrast is non-zero exactly on the brain
        img[~mask] = 0.0
        out = np.zeros(shape_full, dtype=np.int16)
        out[crop] = np.clip(np.rint(img), 0, 32767).astype(np.int16)
        images[modality] = out

    seg = np.zeros(shape_full, dtype=np.uint8)
    seg[crop] = labels
    if not return_tissues:
        return images, seg
    tissues = {}
    for name, frac in (("gm", gm_a), ("wm", wm_a), ("csf", csf_a)):
        tissues[name] = np.zeros(shape_full, dtype=np.float32)
        tissues[name][crop] = frac
    return images, seg, tissues


# --------------------------------------------------------------------------------------------
# anatomy


def _template_dir() -> pathlib.Path:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise GliomaSuiteError(
            "The demo case needs the MNI152 brain template that ships with the 'nilearn' package, "
            "which is not installed; install it with 'pip install nilearn'."
        )
    data = pathlib.Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    missing = [f for f in _TEMPLATE_FILES.values() if not (data / f).is_file()]
    if missing:
        raise GliomaSuiteError(
            f"The demo case needs {missing[0]} from the 'nilearn' package but it is not in {data}; "
            "reinstall nilearn (pip install --force-reinstall nilearn)."
        )
    return data


def _grid_image(size=GRID_SIZE, origin=GRID_ORIGIN) -> sitk.Image:
    ref = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
    ref.SetSpacing(GRID_SPACING)
    ref.SetOrigin([float(o) for o in origin])
    ref.SetDirection(GRID_DIRECTION)
    return ref


def _to_image(array: np.ndarray) -> sitk.Image:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(GRID_SPACING)
    img.SetOrigin(GRID_ORIGIN)
    img.SetDirection(GRID_DIRECTION)
    return img


def _rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rot_z @ rot_y @ rot_x


def _anatomy_on_grid(rng: np.random.Generator) -> dict:
    """GM, WM, CSF fractions and the brain mask on the brain's bounding box of the BraTS grid.

    Returns a dict: ``gm``, ``wm``, ``csf`` (float32), ``mask`` (bool), all on the box ``crop``
    (slices of the full z, y, x grid), and ``midline_x``, the box x index of the mid-sagittal plane.
    """
    data = _template_dir()
    # uint8 files (probabilities and intensities scaled to 0..255); kept uint8 to save memory
    t1 = sitk.ReadImage(str(data / _TEMPLATE_FILES["t1"]), sitk.sitkUInt8)
    gm = sitk.ReadImage(str(data / _TEMPLATE_FILES["gm"]), sitk.sitkUInt8)
    wm = sitk.ReadImage(str(data / _TEMPLATE_FILES["wm"]), sitk.sitkUInt8)
    # nilearn's load_mni152_brain_mask: the template above 20 % of its maximum.
    brain = sitk.Cast(t1 > 51, sitk.sitkUInt8) * 255
    del t1

    # BraTS-grid point p -> template point q = A (p - c_grid) + c_mni.
    scale = _MNI_TO_BRATS_SCALE * rng.uniform(0.95, 1.04) * rng.uniform(0.98, 1.02, 3)
    angles = np.deg2rad(rng.uniform(-4.0, 4.0, 3))
    matrix = _rotation(*angles) @ np.diag(1.0 / scale)
    centre_index = _GRID_CENTRE_INDEX + rng.uniform(-2.5, 2.5, 3)
    centre = np.array(GRID_ORIGIN) + centre_index * np.array(GRID_SPACING)
    mni_centre = _MNI_CENTRE + rng.uniform(-1.0, 1.0, 3)
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(matrix.ravel().tolist())
    transform.SetCenter(centre.tolist())
    transform.SetTranslation((mni_centre - centre).tolist())

    # Bounding box of the template brain on the grid (its corners mapped through the inverse).
    brain_arr = sitk.GetArrayViewFromImage(brain)
    idx = np.array([[a.min(), a.max()] for a in np.nonzero(brain_arr)])[::-1]  # x, y, z
    del brain_arr
    corners = np.array(np.meshgrid(*idx, indexing="ij")).reshape(3, -1).T
    corners_phys = np.array([brain.TransformContinuousIndexToPhysicalPoint(c.tolist()) for c in corners])
    inv = np.linalg.inv(matrix)
    grid_pts = (inv @ (corners_phys - mni_centre).T).T + centre
    lo = np.maximum(np.floor(grid_pts.min(0) - np.array(GRID_ORIGIN)) - 3, 0).astype(int)
    hi = np.minimum(np.ceil(grid_pts.max(0) - np.array(GRID_ORIGIN)) + 4, GRID_SIZE).astype(int)
    ref = _grid_image(size=hi - lo, origin=np.array(GRID_ORIGIN) + lo)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo[::-1], hi[::-1]))

    def resample(img):
        out = sitk.Resample(img, ref, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        return sitk.GetArrayFromImage(out)

    gm_a, wm_a, brain_a = (resample(img) / np.float32(255.0) for img in (gm, wm, brain))
    del gm, wm, brain
    mask = brain_a > 0.5
    csf_frac = np.clip(1.0 - gm_a - wm_a, 0.0, 1.0)
    # skull stripping removes most extra-axial CSF: drop a CSF-dominated outer shell
    shell = mask & ~ndi.binary_erosion(mask, iterations=2)
    mask &= ~(shell & (csf_frac > 0.6))
    del csf_frac, shell
    gm_a = np.clip(gm_a, 0.0, 1.0)
    wm_a = np.clip(wm_a, 0.0, 1.0)
    total = gm_a + wm_a
    over = total > 1.0
    gm_a[over] /= total[over]
    wm_a[over] /= total[over]
    csf_a = np.clip(1.0 - gm_a - wm_a, 0.0, 1.0)
    for a in (gm_a, wm_a, csf_a):
        a[~mask] = 0.0
    midline_x = float(centre[0] - GRID_ORIGIN[0] - lo[0])
    return dict(gm=gm_a, wm=wm_a, csf=csf_a, mask=mask, crop=crop, z_offset=int(lo[2]),
                midline_x=midline_x)


# --------------------------------------------------------------------------------------------
# random fields


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise with unit standard deviation (float32)."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    noise = ndi.gaussian_filter(noise, sigma, mode="reflect")
    noise /= max(float(noise.std()), 1e-6)
    return noise


def _bias_field(rng: np.random.Generator, shape, amplitude: float) -> np.ndarray:
    """A smooth multiplicative field exp(amplitude * f), f a few random low-frequency waves."""
    axes = [np.arange(s, dtype=np.float32) for s in shape]
    field = np.zeros(shape, dtype=np.float32)
    for _ in range(4):
        term = None
        for ax, n in enumerate(shape):
            wavelength = rng.uniform(160.0, 320.0)
            phase = rng.uniform(0.0, 2.0 * np.pi)
            wave = np.cos(2.0 * np.pi * axes[ax] / wavelength + phase)
            wave = wave.reshape([-1 if a == ax else 1 for a in range(3)])
            term = wave if term is None else term * wave
        field += rng.standard_normal() * term
    field -= field.mean()
    field /= max(float(field.std()), 1e-6)
    return np.exp(amplitude * field).astype(np.float32)


# --------------------------------------------------------------------------------------------
# tumour


def _make_tumour(rng: np.random.Generator, anatomy: dict, growth: float = 1.0) -> dict:
    """Place an irregular glioma in one hemisphere's white matter.

    Applies the mass effect to the tissue maps in ``anatomy`` in place and returns the label map
    (on the anatomy box) and the soft tumour-tissue fractions used to synthesise the contrasts.
    """
    gm, wm, csf, mask = anatomy["gm"], anatomy["wm"], anatomy["csf"], anatomy["mask"]
    shape = mask.shape
    radius = rng.uniform(15.0, 22.0)  # tumour core (NCR + ET) mean radius, mm
    edema_reach = int(rng.integers(9, 17))  # mm of white matter the edema spreads through
    side = int(rng.integers(0, 2))  # 0: patient right (low x index), 1: left

    # Candidate centres: deep white matter far from the brain surface and the ventricles.
    step = 2
    safe = mask[::step, ::step, ::step] & (csf[::step, ::step, ::step] < 0.5)
    dist = ndi.distance_transform_edt(safe) * step
    wm_ds = wm[::step, ::step, ::step]
    zz, yy, xx = np.meshgrid(*[np.arange(0, s, step) for s in shape], indexing="ij", sparse=True)
    mid_x = anatomy["midline_x"]
    z_grid = zz + anatomy["z_offset"]
    hemi = (xx < mid_x - 14) if side == 0 else (xx > mid_x + 14)
    in_range = hemi & (z_grid > 50) & (z_grid < 108)
    for _ in range(6):
        candidates = (wm_ds > 0.75) & in_range & (dist > radius + 5.0)
        if candidates.any():
            break
        radius *= 0.85
    else:  # no deep white matter that far from the surface: take the deepest white matter
        score = np.where((wm_ds > 0.5) & in_range, dist, 0.0)
        candidates = score >= score.max()
    pts = np.argwhere(candidates) * step
    centre = pts[int(rng.integers(0, len(pts)))].astype(float) + rng.uniform(-1.0, 1.0, 3)
    if growth != 1.0:  # a later scan: the same place, a larger tumour (growth 1.0 leaves every draw as it was)
        radius *= growth
        edema_reach = int(round(edema_reach * growth))

    # Local box around the tumour.
    half = int(np.ceil(radius * 1.5 + edema_reach + 8))
    b_lo = np.maximum(np.floor(centre).astype(int) - half, 0)
    b_hi = np.minimum(np.floor(centre).astype(int) + half + 1, shape)
    box = tuple(slice(a, b) for a, b in zip(b_lo, b_hi))
    c_local = centre - b_lo
    bshape = tuple(b_hi - b_lo)

    # Mild mass effect: the anatomy is pushed radially away from the tumour centre.
    _mass_effect(rng, gm, wm, csf, mask, box, c_local, radius, half)

    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in bshape], indexing="ij", sparse=True)
    rel = [g - c for g, c in zip(grids, c_local)]
    axes_rot = _rotation(*rng.uniform(-np.pi, np.pi, 3))
    axes_len = radius * rng.uniform(0.8, 1.2, 3)
    axes_len *= radius / np.cbrt(np.prod(axes_len))  # keep the volume of a ball of `radius`
    proj = np.zeros(bshape, dtype=np.float32)
    for k in range(3):
        u = axes_rot[0, k] * rel[0] + axes_rot[1, k] * rel[1] + axes_rot[2, k] * rel[2]
        proj += (u / axes_len[k]) ** 2
    ellip = np.sqrt(proj)
    del proj

    shape_noise = _smooth_noise(rng, bshape, 4.0)
    fine_noise = _smooth_noise(rng, bshape, 2.0)
    f_core = ellip + 0.22 * shape_noise + 0.06 * fine_noise
    core = (f_core < 1.0) & mask[box]
    core = _largest_component(core)
    # Necrosis: the core minus an enhancing rim of uneven thickness (mostly 2-5 mm, with a
    # thicker nodular part), measured inward from the core surface.
    depth = ndi.distance_transform_edt(core).astype(np.float32)
    rim_mm = rng.uniform(2.2, 3.2) + 1.0 * _smooth_noise(rng, bshape, 3.0)
    rim_mm += rng.uniform(2.0, 5.0) * np.clip(_smooth_noise(rng, bshape, 5.0) - 1.0, 0.0, None)
    necrosis = depth > np.clip(rim_mm, 2.0, None)  # >= 2 mm: NCR never touches edema
    necrosis = _largest_component(necrosis) if necrosis.any() else necrosis
    if not necrosis.any():  # tiny core: keep a necrotic centre anyway
        necrosis = depth >= max(float(depth.max()) - 1.0, 1.0)
    enhancing = core & ~necrosis

    # Edema: grows from the core through white matter (geodesic dilation), less into grey matter,
    # never into CSF, plus a thin rim all around the core.
    wm_b, csf_b = wm[box], csf[box]
    ed_noise = _smooth_noise(rng, bshape, 3.0)
    passable = mask[box] & (csf_b < 0.5) & (wm_b + 0.18 * ed_noise > 0.5)
    passable |= core
    grown = core.copy()
    ball = ndi.generate_binary_structure(3, 1)
    cube = ndi.generate_binary_structure(3, 2)
    for i in range(edema_reach):
        grown = ndi.binary_dilation(grown, structure=cube if i % 2 else ball, mask=passable)
    rim = ndi.binary_dilation(core, structure=cube, iterations=2) & mask[box] & (csf_b < 0.7)
    edema = (grown | rim)
    # smooth the staircase edges, keep it in the brain and out of the core
    edema = ndi.gaussian_filter(edema.astype(np.float32), 1.0) > 0.5
    edema &= mask[box] & ~core & (csf_b < 0.7)
    edema = _largest_component(edema | core) & ~core

    labels = np.zeros(shape, dtype=np.uint8)
    lab_b = labels[box]
    lab_b[edema] = ED
    lab_b[necrosis] = NCR
    lab_b[enhancing] = ET

    # Soft (partial-volume) versions for the image synthesis, and edema strength that fades
    # with distance from the core.
    soft = {}
    for name, m in (("ncr", necrosis), ("et", enhancing), ("ed", edema)):
        soft[name] = ndi.gaussian_filter(m.astype(np.float32), 0.7)
    d_core = ndi.distance_transform_edt(~core).astype(np.float32)
    strength = np.clip(1.0 - d_core / (edema_reach + 8.0), 0.5, 1.0) * (1.0 + 0.1 * ed_noise)
    soft["ed"] *= np.clip(strength, 0.45, 1.1)
    soft["ed"] *= 1.0 - np.clip(soft["ncr"] + soft["et"], 0.0, 1.0)
    soft["texture"] = 0.08 * _smooth_noise(rng, bshape, 1.2)
    return dict(labels=labels, box=box, soft=soft)


def _largest_component(m: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(m)
    if n <= 1:
        return m
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _mass_effect(rng, gm, wm, csf, mask, box, c_local, radius, reach):
    """Push tissue in ``box`` radially away from ``c_local``, in place.

    Tissue shown at distance r comes from r - D (exp(-(r/L)^2) - exp(-(reach/L)^2)): monotonic in
    r (no folding), D mm of displacement at the centre and none from ``reach`` mm on.
    """
    disp = rng.uniform(0.18, 0.3) * radius
    length = radius + 8.0
    floor = float(np.exp(-((reach / length) ** 2)))
    bshape = tuple(s.stop - s.start for s in box)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in bshape], indexing="ij")
    rel = [g - c for g, c in zip(grids, c_local)]
    r = np.sqrt(rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2)
    push = np.clip(np.exp(-((r / length) ** 2)) - floor, 0.0, None)
    src_r = np.maximum(r - disp * push, 0.0)
    factor = np.where(r > 1e-3, src_r / np.maximum(r, 1e-3), 0.0).astype(np.float32)
    coords = np.stack([c + rel_k * factor for c, rel_k in zip(c_local, rel)])
    del grids, rel, r, src_r, factor
    for arr in (gm, wm, csf):
        sub = arr[box]
        sub[...] = ndi.map_coordinates(sub, coords, order=1, mode="nearest")
    m = mask[box]
    m[...] = ndi.map_coordinates(m.astype(np.float32), coords, order=1, mode="nearest") > 0.5
    for arr in (gm, wm, csf):
        arr[box][~m] = 0.0


def _apply_tumour(normal: np.ndarray, tumour: dict, lv: dict) -> np.ndarray:
    """Mix tumour tissue into a contrast: edema shifts tissue towards the edema level."""
    img = normal.astype(np.float32, copy=True)
    box, soft = tumour["box"], tumour["soft"]
    sub = img[box]
    w_ed = soft["ed"]
    sub *= 1.0 - w_ed
    sub += w_ed * lv["ed"]
    p_core = np.clip(soft["ncr"] + soft["et"], 0.0, 1.0)
    sub *= 1.0 - p_core
    sub += (soft["ncr"] * lv["ncr"] + soft["et"] * lv["et"]) * (1.0 + soft["texture"])
    return img
