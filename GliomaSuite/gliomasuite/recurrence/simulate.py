"""Tumour growth and treatment simulated on a real baseline scan: the training data of the recurrence model.

No public data set pairs post-treatment multimodal series with voxel labels of true recurrence and
pseudoprogression, so the recurrent U-Net learns from series simulated on real BraTS baselines, and
is checked on real progression pairs only as far as the model card says.

The model (each piece named with its source):

* **Growth** — Fisher-Kolmogorov reaction-diffusion of the tumour cell density c in [0, 1]
  (Swanson et al. 2000; Konukoglu et al. 2010)::

      dc/dt = div(D(x) grad c) + rho c (1 - c)

  with D = D_w in white matter, D_w / 10 in grey matter and 0 in CSF, in the resection cavity and
  outside the brain (no flux there). D_w is drawn log-uniformly from 1e-4 to 4e-2 cm^2/day and rho
  from 0.003 to 0.19 /day (Lipkova et al. 2019's priors; Harpold et al. 2007), log-uniformly below
  0.05 /day in 85 % of the series and above it in 15 % (faster ones fill the simulated region within one
  visit interval: obvious, and rarer in clinics). Solved on a 2 mm grid:
  explicit finite-volume diffusion (face coefficient the harmonic mean of the two voxels, so CSF is a
  wall) and the exact logistic step for the reaction (operator splitting), with a time step inside
  the explicit stability bound. rho varies smoothly in space (log-normal, sd 0.35) so recurrences
  start at hot spots, as they do.
* **Tissue** — white matter, grey matter and CSF from the case itself: three-class k-means of the
  T1 intensities inside the brain (tumour voxels taken as white matter, where gliomas spread).
* **Initial density** — the expert segmentation of the real case: c = 1 in the tumour core; in the
  edema c is low and patchy (a smooth log-normal field, median 0.06, sd 1.0 in log, falling to half
  at the edema's edge, at most 0.75): vasogenic edema is water more than cells, and the few dense
  patches are where a recurrence starts, as a nodule;
  beyond the visible edema c falls on from the edema's edge value as exp(-distance / sqrt(D/rho)), the
  travelling wave's infiltration length.
* **Visibility** — enhancing (T1ce) where c >= 0.8 and FLAIR/T2 abnormal where c >= 0.16
  (Swanson 2008; Konukoglu 2010); necrosis in the dense core more than 4 mm inside its edge, so tumour enhances as a rim.
* **Treatment** — resection on day 0 (gross total: the core and a 2 mm margin become a CSF cavity;
  subtotal: a part of the core at its border is left), then radiotherapy from day 21-35, 30 fractions
  of 2 Gy over 6 weeks (5 a week), each a linear-quadratic surviving fraction exp(-(alpha d + beta d^2))
  with alpha 0.02-0.04 /Gy and alpha/beta = 10 (Rockne et al. 2010), inside the field: the tumour and
  a 2 cm margin.
* **Chemotherapy** — adjuvant temozolomide, six 28-day cycles from 4 weeks after radiotherapy (Stupp
  et al. 2005), as a share k ~ U(0, 0.9) of proliferation suppressed while it lasts (rho (1 - k)): our
  simplification, which gives responders as well as early recurrences.
* **Biopsy only** — a fifth of the series are a tumour followed after a biopsy, without resection or
  treatment (as lower-grade-looking tumours often are): the visible tumour and its edema stay, and
  grow or not as D and rho say. Without them every visible tumour after treatment would be a
  recurrence, and a model could call recurrence from the presence of tumour instead of its growth.
* **Pseudoprogression** — in a third of the series, a transient treatment-related enhancement with
  FLAIR signal in a patchy band 2-8 mm around the cavity, peaking 2-10 weeks after radiotherapy and
  fading over 1-2 months (Brandsma et al. 2008): it enhances like tumour but has no tumour cells, so the
  model must tell it from recurrence by its timing, shape and evolution.
* **Visits** — a post-operative scan (day 2), one 2-8 weeks after radiotherapy, then two more 1-4 months apart.
* **Images** — rendered into the case's own scans: the tumour is first replaced by the mirrored
  healthy hemisphere, then each visit mixes, per sequence, towards the case's own median intensities
  of enhancing tumour, necrosis, edema and CSF (cavity). Nuisance: a rigid misregistration of up to
  2 mm and 2 degrees, a global intensity drift of +-15 %, a smooth bias field of +-10 %, noise, and
  missing sequences (a sequence absent at a visit, or a T1ce-only series as from many sites).

Labels: a visit shows **recurrence** when the true tumour's enhancing volume (c >= 0.8, pseudo-
progression excluded) is at least 1 cm3 and has grown since its smallest earlier value by more than
25 % and 0.5 cm3 (progression from the nadir, as RANO 2.0 judges it). The **where-next** truth is the
true tumour's visible core (c >= 0.8) at the following visit.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy import ndimage

from ..errors import GliomaSuiteError
from ..modalities import MODALITIES

#: Stored with every simulated series; a series from another version is simulated again.
SIMULATOR_VERSION = 3
GRID_MM = 2.0
#: Cube edge of the simulated region, in 2 mm voxels (96 mm): the tumour and its surroundings.
CROP = 48
C_ENHANCING = 0.8
C_FLAIR = 0.16
NECROSIS_DEPTH_MM = 4.0
D_WHITE_RANGE_MM2_DAY = (1e-2, 4.0)      # 1e-4 .. 4e-2 cm^2/day
RHO_RANGE_PER_DAY = (0.003, 0.19)
#: Above this rho (doubling in under 2 weeks) a tumour fills the 96 mm cube within one visit interval;
#: such tumours are a minority (FAST_SHARE of the series), the rest log-uniform below it.
RHO_FAST = 0.05
FAST_SHARE = 0.15
GREY_TO_WHITE = 0.1
ALPHA_RANGE_PER_GY = (0.02, 0.04)
ALPHA_BETA_GY = 10.0
DOSE_PER_FRACTION_GY = 2.0
FRACTIONS = 30
RT_FIELD_MARGIN_MM = 20.0
CHEMO_EFFECT_RANGE = (0.0, 0.9)
PSEUDOPROGRESSION_SHARE = 0.35
#: Share of series that are a biopsied tumour followed without resection or treatment, so a visible tumour
#: that stays the same size is common, and only growth means progression.
BIOPSY_SHARE = 0.2
EDEMA_MEDIAN = 0.06
EDEMA_PATCHINESS = 1.0
#: Spread of the proliferation rate across the tumour (log-normal, smooth over about 6 mm).
RHO_HETEROGENEITY = 0.35
RECURRENCE_MIN_CM3 = 1.0
RECURRENCE_GROWTH = 0.25
RECURRENCE_GROWTH_CM3 = 0.5
VISITS = 4
VOXEL_CM3 = GRID_MM ** 3 / 1000.0


@dataclass
class Baseline:
    """A real case brought to the simulation grid: 2 mm, cropped around its tumour."""

    name: str
    images: Dict[str, np.ndarray]          # healthy-looking background per modality (tumour mirrored away)
    tissue: np.ndarray                     # 0 outside brain, 1 CSF, 2 grey, 3 white matter
    labels: np.ndarray                     # BraTS labels at 2 mm (0, 1, 2, 4)
    reference: Dict[str, Dict[str, float]]  # modality -> {"ET","NCR","ED","CSF","WM"} median intensity
    origin_voxel: Tuple[int, int, int]     # crop origin on the 2 mm grid (z, y, x)


@dataclass
class Scenario:
    d_white: float            # mm^2/day
    rho: float                # /day
    gross_total: bool
    biopsy_only: bool         # no resection and no treatment yet: watchful waiting after a biopsy
    alpha: float              # /Gy
    chemo_effect: float       # share of proliferation suppressed during adjuvant temozolomide
    rt_start: float           # day
    pseudoprogression: bool
    pseudo_peak: float        # day
    pseudo_width: float       # days
    pseudo_amplitude: float
    visit_days: List[float]
    available: np.ndarray     # (VISITS, 4) bool, modality order of MODALITIES
    seed: int


@dataclass
class SimulatedSeries:
    """One simulated patient: VISITS time points on the baseline's 2 mm crop."""

    images: np.ndarray        # (VISITS, 4, CROP, CROP, CROP) float32, absent sequences are zeros
    available: np.ndarray     # (VISITS, 4) bool
    masks: np.ndarray         # (VISITS, CROP, CROP, CROP) uint8: what a reader outlines (enhancing + necrosis)
    truth: np.ndarray         # (VISITS, CROP, CROP, CROP) uint8: true tumour core (c >= 0.8)
    days: np.ndarray          # (VISITS,) days after surgery
    recurrence: np.ndarray    # (VISITS,) bool: the visit shows true recurrence/progression (see module doc)
    pseudo: np.ndarray        # (VISITS,) bool: treatment-related enhancement visible at the visit
    brain: np.ndarray         # (CROP, CROP, CROP) bool
    scenario: Scenario = field(repr=False, default=None)


# ----------------------------------------------------------------------------------------------
# the baseline


def _block_mean(array: np.ndarray, factor: int = 2) -> np.ndarray:
    z, y, x = (s // factor * factor for s in array.shape)
    a = array[:z, :y, :x].astype(np.float32)
    return a.reshape(z // factor, factor, y // factor, factor, x // factor, factor).mean(axis=(1, 3, 5))


def _block_labels(labels: np.ndarray, factor: int = 2) -> np.ndarray:
    """Labels at 2 mm: the highest-priority label present in the block (ET > NCR > ED), so thin rims survive."""
    z, y, x = (s // factor * factor for s in labels.shape)
    blocks = labels[:z, :y, :x].reshape(z // factor, factor, y // factor, factor, x // factor, factor)
    out = np.zeros((z // factor, y // factor, x // factor), np.uint8)
    for value in (2, 1, 4):  # later wins
        present = (blocks == value).mean(axis=(1, 3, 5)) >= 0.25
        out[present] = value
    return out


def _kmeans_tissue(t1: np.ndarray, brain: np.ndarray, tumour: np.ndarray) -> np.ndarray:
    values = t1[brain & ~tumour]
    centres = np.percentile(values, [5, 50, 90]).astype(np.float64)
    for _ in range(20):
        assign = np.argmin(np.abs(values[:, None] - centres[None]), axis=1)
        new = np.array([values[assign == k].mean() if np.any(assign == k) else centres[k] for k in range(3)])
        if np.allclose(new, centres):
            break
        centres = new
    tissue = np.zeros(t1.shape, np.uint8)
    tissue[brain] = 1 + np.argmin(np.abs(t1[brain][:, None] - centres[None]), axis=1)
    tissue[tumour] = 3
    return tissue


def _crop_origin(labels: np.ndarray, shape) -> Tuple[int, int, int]:
    core = np.argwhere(np.isin(labels, (1, 4)))
    if len(core) == 0:
        core = np.argwhere(labels > 0)
    centre = core.mean(axis=0).round().astype(int)
    return tuple(int(np.clip(c - CROP // 2, 0, max(0, s - CROP))) for c, s in zip(centre, shape))


def _crop(array: np.ndarray, origin) -> np.ndarray:
    z, y, x = origin
    out = np.zeros((CROP, CROP, CROP), array.dtype)
    part = array[z:z + CROP, y:y + CROP, x:x + CROP]
    out[:part.shape[0], :part.shape[1], :part.shape[2]] = part
    return out


def load_baseline(case_dir) -> Baseline:
    """A labelled BraTS case (``<case>_{t1,t1ce,t2,flair,seg}.nii.gz``) on the simulation grid."""
    import SimpleITK as sitk

    case_dir = Path(case_dir)
    name = case_dir.name
    arrays = {}
    for key in (*MODALITIES, "seg"):
        path = case_dir / f"{name}_{key}.nii.gz"
        if not path.is_file():
            raise GliomaSuiteError(f"The baseline case {case_dir} lacks {path.name}; a simulation baseline needs the "
                                   "four sequences and the expert segmentation in BraTS 2021 naming.")
        arrays[key] = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    labels = _block_labels(arrays.pop("seg"))
    full = {m: _block_mean(a) for m, a in arrays.items()}
    brain_full = np.all([full[m] > 0 for m in MODALITIES], axis=0)
    tumour_full = labels > 0
    # The tumour replaced by the mirror image of the other hemisphere (left-right is the last axis in
    # BraTS's SRI24 space); where the mirror is tumour too, by the median of white matter.
    tissue_full = _kmeans_tissue(full["t1"], brain_full, tumour_full)
    hidden = ndimage.binary_dilation(tumour_full, iterations=1)
    mirror_ok = hidden & ~hidden[:, :, ::-1] & brain_full[:, :, ::-1]
    reference = {}
    background = {}
    for m, a in full.items():
        wm = float(np.median(a[(tissue_full == 3) & ~tumour_full]))
        ref = {"WM": wm, "CSF": float(np.median(a[(tissue_full == 1) & ~tumour_full]))}
        for region, values in (("ET", (4,)), ("NCR", (1,)), ("ED", (2,))):
            inside = np.isin(labels, values)
            ref[region] = float(np.median(a[inside])) if inside.sum() >= 20 else float("nan")
        reference[m] = ref
        b = a.copy()
        b[mirror_ok] = a[:, :, ::-1][mirror_ok]
        b[hidden & ~mirror_ok & brain_full] = wm
        background[m] = b
    _fill_missing_references(reference)
    origin = _crop_origin(labels, labels.shape)
    return Baseline(name=name, images={m: _crop(b, origin) for m, b in background.items()},
                    tissue=_crop(tissue_full, origin), labels=_crop(labels, origin), reference=reference,
                    origin_voxel=origin)


def _fill_missing_references(reference) -> None:
    """A case without enhancing tumour (or necrosis) still renders one: typical contrasts against white matter."""
    typical = {"t1": {"ET": 0.85, "NCR": 0.55, "ED": 0.8}, "t1ce": {"ET": 2.2, "NCR": 0.6, "ED": 0.85},
               "t2": {"ET": 1.6, "NCR": 2.6, "ED": 1.9}, "flair": {"ET": 1.3, "NCR": 0.9, "ED": 1.6}}
    for m, ref in reference.items():
        for region, ratio in typical[m].items():
            if not np.isfinite(ref[region]):
                ref[region] = ratio * ref["WM"]


# ----------------------------------------------------------------------------------------------
# growth


def diffusion_map(tissue: np.ndarray, d_white: float, cavity: Optional[np.ndarray] = None) -> np.ndarray:
    """D(x) in mm^2/day: D_w in white matter, D_w/10 in grey, 0 in CSF, cavity and outside the brain."""
    d = np.zeros(tissue.shape, np.float32)
    d[tissue == 3] = d_white
    d[tissue == 2] = d_white * GREY_TO_WHITE
    if cavity is not None:
        d[cavity] = 0.0
    return d


class FisherKolmogorov:
    """dc/dt = div(D grad c) + rho c (1 - c) on a regular grid (spacing ``h`` mm), no flux where D = 0."""

    def __init__(self, d: np.ndarray, rho, h: float = GRID_MM):
        self.rho = rho  # a number, or a map of the same shape as d
        self.h2 = h * h
        # Face coefficients: harmonic means of the two neighbours (zero next to CSF or outside).
        self.faces = []
        for axis in range(3):
            a = np.take(d, range(d.shape[axis] - 1), axis=axis)
            b = np.take(d, range(1, d.shape[axis]), axis=axis)
            with np.errstate(divide="ignore", invalid="ignore"):
                face = np.where((a > 0) & (b > 0), 2 * a * b / (a + b), 0.0).astype(np.float32)
            self.faces.append(face)
        d_max = float(d.max()) if d.size else 0.0
        self.dt_max = 0.9 * self.h2 / (6 * d_max) if d_max > 0 else np.inf

    def _diffusion(self, c: np.ndarray) -> np.ndarray:
        out = np.zeros_like(c)
        for axis, face in enumerate(self.faces):
            n = c.shape[axis]
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis], hi[axis] = slice(0, n - 1), slice(1, n)
            flux = face * (c[tuple(hi)] - c[tuple(lo)])
            out[tuple(lo)] += flux
            out[tuple(hi)] -= flux
        return out / self.h2

    def run(self, c: np.ndarray, days: float, rho_scale: float = 1.0) -> np.ndarray:
        """Advance ``c`` by ``days``, proliferation multiplied by ``rho_scale`` (chemotherapy)."""
        if days <= 0:
            return c
        steps = max(1, int(np.ceil(days / min(1.0, self.dt_max))))
        dt = days / steps
        growth = np.exp(self.rho * rho_scale * dt)
        c = c.astype(np.float32, copy=True)
        for _ in range(steps):
            c += dt * self._diffusion(c)
            np.clip(c, 0.0, 1.0, out=c)
            c = c * growth / (1.0 + c * (growth - 1.0))
        return c


def initial_density(labels: np.ndarray, d_white: float, rho: float, rng: np.random.Generator) -> np.ndarray:
    """c at diagnosis from the expert labels (see the module docstring)."""
    core = np.isin(labels, (1, 4))
    whole = labels > 0
    if not core.any():
        core = whole
    to_core = ndimage.distance_transform_edt(~core) * GRID_MM
    to_whole = ndimage.distance_transform_edt(~whole) * GRID_MM
    edema_depth = max(float(to_core[whole & ~core].max()) if (whole & ~core).any() else GRID_MM, GRID_MM)
    c = np.zeros(labels.shape, np.float32)
    c[core] = 1.0
    edema = whole & ~core
    # Vasogenic edema holds water more than cells: its density stays well below the enhancing threshold,
    # patchy (a smooth log-normal field), so a recurrence starts as nodules rather than as a whole shell.
    patchy = np.exp(EDEMA_PATCHINESS * _smooth_noise(labels.shape, rng, 2.0))
    c[edema] = np.minimum(EDEMA_MEDIAN * patchy[edema] * (1 - 0.5 * to_core[edema] / edema_depth), C_ENHANCING - 0.05)
    length = np.sqrt(d_white / rho)  # mm
    outside = ~whole
    c[outside] = 0.5 * EDEMA_MEDIAN * np.exp(-to_whole[outside] / max(length, 0.5))
    return c


# ----------------------------------------------------------------------------------------------
# one series


def draw_scenario(rng: np.random.Generator, seed: int = 0) -> Scenario:
    log_uniform = lambda lo, hi: float(np.exp(rng.uniform(np.log(lo), np.log(hi))))  # noqa: E731
    rt_start = float(rng.uniform(21, 35))
    rt_end = rt_start + 42
    v1 = rt_end + rng.uniform(14, 56)
    v2 = v1 + rng.uniform(28, 120)
    v3 = v2 + rng.uniform(28, 120)
    available = np.ones((VISITS, len(MODALITIES)), bool)
    if rng.random() < 0.25:  # a T1ce-only site
        available[:, [i for i, m in enumerate(MODALITIES) if m != "t1ce"]] = False
    else:
        available &= rng.random(available.shape) > 0.12
        available[:, MODALITIES.index("t1ce")] |= rng.random(VISITS) > 0.05
        available[-1, MODALITIES.index("t1ce")] = True
    return Scenario(
        d_white=log_uniform(*D_WHITE_RANGE_MM2_DAY),
        rho=log_uniform(RHO_RANGE_PER_DAY[0], RHO_FAST) if rng.random() > FAST_SHARE else log_uniform(RHO_FAST, RHO_RANGE_PER_DAY[1]),
        gross_total=bool(rng.random() < 0.6), biopsy_only=bool(rng.random() < BIOPSY_SHARE),
        alpha=float(rng.uniform(*ALPHA_RANGE_PER_GY)), rt_start=rt_start,
        chemo_effect=float(rng.uniform(*CHEMO_EFFECT_RANGE)),
        pseudoprogression=bool(rng.random() < PSEUDOPROGRESSION_SHARE),
        pseudo_peak=float(rt_end + rng.uniform(14, 70)), pseudo_width=float(rng.uniform(20, 45)),
        pseudo_amplitude=float(rng.uniform(0.7, 1.0)), visit_days=[2.0, float(v1), float(v2), float(v3)],
        available=available, seed=seed)


def _growth_periods(s: Scenario, start: float, end: float):
    """(from, to, rho scale) pieces of [start, end]: scaled by 1 - chemo_effect during adjuvant chemotherapy."""
    chemo_from = s.rt_start + 42 + 28
    chemo_to = chemo_from + 6 * 28
    cuts = sorted({start, end, *(t for t in (chemo_from, chemo_to) if start < t < end)})
    effect = 0.0 if s.biopsy_only else s.chemo_effect
    return [(a, b, 1.0 - effect if chemo_from <= a < chemo_to else 1.0) for a, b in zip(cuts[:-1], cuts[1:])]


def _smooth_noise(shape, rng, sigma: float) -> np.ndarray:
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field_ / (field_.std() + 1e-6)


def _radiotherapy(scenario: Scenario, field_: np.ndarray):
    """The kill(day_from, day_to, c) callback: one LQ fraction each weekday of the 6 weeks."""
    beta = scenario.alpha / ALPHA_BETA_GY
    surviving = float(np.exp(-(scenario.alpha * DOSE_PER_FRACTION_GY + beta * DOSE_PER_FRACTION_GY ** 2)))
    days = [scenario.rt_start + 7 * (k // 5) + k % 5 for k in range(FRACTIONS)]
    return days, np.where(field_, surviving, 1.0).astype(np.float32)


def _enhancing(c: np.ndarray, cavity: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(enhancing rim, necrosis) of the true tumour at one time."""
    core = (c >= C_ENHANCING) & ~cavity
    depth = int(round(NECROSIS_DEPTH_MM / GRID_MM))
    necrosis = ndimage.binary_erosion(core, iterations=depth) & (c > 0.9)
    return core & ~necrosis, necrosis


def simulate_series(baseline: Baseline, rng: np.random.Generator, scenario: Optional[Scenario] = None) -> SimulatedSeries:
    """One post-treatment series on ``baseline`` (see the module docstring for the model)."""
    s = scenario or draw_scenario(rng)
    brain = baseline.tissue > 0
    c = initial_density(baseline.labels, s.d_white, s.rho, rng) * brain
    core = np.isin(baseline.labels, (1, 4))
    if not core.any():
        core = baseline.labels > 0
    # Resection: the core (and 2 mm) becomes the cavity; a subtotal one leaves a part at the core's border.
    cavity = ndimage.binary_dilation(core, iterations=1) & brain
    if s.biopsy_only:
        cavity = np.zeros_like(cavity)
    elif not s.gross_total:
        border = np.argwhere(core & ~ndimage.binary_erosion(core))
        centre = border[rng.integers(len(border))]
        zz, yy, xx = np.ogrid[:CROP, :CROP, :CROP]
        radius = rng.uniform(3, 6)
        residual = ((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius ** 2) & core
        cavity &= ~residual
    c[cavity] = 0.0
    rho = (s.rho * np.exp(RHO_HETEROGENEITY * _smooth_noise(c.shape, rng, 3.0))).astype(np.float32)
    solver = FisherKolmogorov(diffusion_map(baseline.tissue, s.d_white, cavity), rho)
    rt_field = ndimage.distance_transform_edt(~(baseline.labels > 0)) * GRID_MM <= RT_FIELD_MARGIN_MM
    fraction_days, surviving = _radiotherapy(s, rt_field)
    if s.biopsy_only:
        fraction_days = []
    # Pseudoprogression's place: a patchy band 2-10 mm around the cavity wall, inside the brain.
    to_cavity = ndimage.distance_transform_edt(~cavity) * GRID_MM
    band = (to_cavity > 0) & (to_cavity <= rng.uniform(4, 8)) & brain
    patches = _smooth_noise(c.shape, rng, 2.0) > rng.uniform(0.0, 0.8)
    pseudo_place = band & patches & cavity.any()
    # Untreated, the tumour keeps its vasogenic edema on FLAIR/T2 whatever the cell density there.
    edema = (baseline.labels == 2) if s.biopsy_only else None

    densities, day = [], 0.0
    events = sorted([(d, "rt") for d in fraction_days] + [(d, "visit") for d in s.visit_days])
    for when, what in events:
        # Adjuvant temozolomide (six 28-day cycles from 4 weeks after radiotherapy) slows proliferation.
        for start, end, scale in _growth_periods(s, day, when):
            c = solver.run(c, end - start, scale)
        day = when
        if what == "rt":
            c *= surviving
        else:
            densities.append(c.copy())

    images = np.zeros((VISITS, len(MODALITIES), CROP, CROP, CROP), np.float32)
    masks = np.zeros((VISITS, CROP, CROP, CROP), np.uint8)
    truth = np.zeros_like(masks)
    pseudo_visible = np.zeros(VISITS, bool)
    true_volumes = np.zeros(VISITS)
    for v, (density, when) in enumerate(zip(densities, s.visit_days)):
        enhancing, necrosis = _enhancing(density, cavity)
        amplitude = (s.pseudo_amplitude * np.exp(-0.5 * ((when - s.pseudo_peak) / s.pseudo_width) ** 2)
                     if s.pseudoprogression and not s.biopsy_only else 0.0)
        pseudo_enh = pseudo_place & (amplitude > 0.5)
        pseudo_visible[v] = bool(pseudo_enh.sum() * VOXEL_CM3 >= 0.3)
        truth[v] = enhancing | necrosis
        true_volumes[v] = truth[v].sum() * VOXEL_CM3
        masks[v] = truth[v] | pseudo_enh
        images[v] = _render(baseline, density, cavity, enhancing, necrosis, pseudo_place, amplitude,
                            band, rng, s.available[v], edema)
        # The reader's mask moves with its scan (the registration error is in both).
        images[v], masks[v] = _misregister(images[v], masks[v], rng)
    recurrence = np.zeros(VISITS, bool)
    for v in range(1, VISITS):
        nadir = true_volumes[:v].min()
        recurrence[v] = (true_volumes[v] >= RECURRENCE_MIN_CM3 and
                         true_volumes[v] > nadir * (1 + RECURRENCE_GROWTH) + RECURRENCE_GROWTH_CM3)
    return SimulatedSeries(images=images, available=s.available.copy(), masks=masks, truth=truth,
                           days=np.array(s.visit_days, np.float32), recurrence=recurrence, pseudo=pseudo_visible,
                           brain=brain, scenario=s)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _render(baseline: Baseline, c, cavity, enhancing, necrosis, pseudo_place, amplitude, band, rng, available,
            edema=None):
    brain = baseline.tissue > 0
    flair_w = _smoothstep((c - C_FLAIR) / 0.1) * brain
    if edema is not None:
        flair_w = np.maximum(flair_w, edema)
    flair_w = np.maximum(flair_w, amplitude * band * 0.8)           # treatment-related FLAIR signal
    enh_w = ndimage.gaussian_filter(enhancing.astype(np.float32), 0.6)
    pseudo_w = ndimage.gaussian_filter((pseudo_place * amplitude).astype(np.float32), 0.8)
    nec_w = ndimage.gaussian_filter(necrosis.astype(np.float32), 0.6)
    cav_w = ndimage.gaussian_filter(cavity.astype(np.float32), 0.5)
    bias = np.exp(0.1 * _smooth_noise(c.shape, rng, 12.0))
    out = np.zeros((len(MODALITIES),) + c.shape, np.float32)
    for i, m in enumerate(MODALITIES):
        if not available[i]:
            continue
        ref = baseline.reference[m]
        a = baseline.images[m].copy()
        a += flair_w * (ref["ED"] - a)
        enh = np.clip(enh_w + (pseudo_w if m == "t1ce" else 0.5 * pseudo_w), 0, 1)
        a += enh * (ref["ET"] - a)
        a += nec_w * (ref["NCR"] - a)
        a += cav_w * (ref["CSF"] - a)
        a *= bias * rng.uniform(0.85, 1.15)
        a += rng.normal(0, 0.03 * ref["WM"], a.shape).astype(np.float32)
        out[i] = np.where(brain, np.maximum(a, 1.0), 0.0)
    return out


def _misregister(images: np.ndarray, mask: np.ndarray, rng) -> Tuple[np.ndarray, np.ndarray]:
    angles = np.deg2rad(rng.uniform(-2, 2, 3))
    shift = rng.uniform(-1, 1, 3)  # voxels (2 mm)
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rot = (np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
           @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]))
    centre = (np.array(mask.shape) - 1) / 2
    offset = centre - rot @ centre + shift
    moved = np.stack([ndimage.affine_transform(im, rot, offset, order=1) if im.any() else im for im in images])
    moved_mask = ndimage.affine_transform(mask.astype(np.float32), rot, offset, order=1) >= 0.5
    return moved, moved_mask.astype(np.uint8)
