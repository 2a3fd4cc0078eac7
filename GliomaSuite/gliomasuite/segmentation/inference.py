"""Segment a study with the V-Net: device and engine choice, sliding window, flip TTA, post-processing.

``segment_study`` is what ``gliomasuite segment`` and the Slicer module run. The network sees the
prepared crop (see :mod:`gliomasuite.preprocess`); the label map comes back on the study's own T1ce
grid with BraTS labels 0/1/2/4.

On a GPU PyTorch runs the network. On the CPU, ONNX Runtime runs it when the optional
``onnxruntime`` is installed (``pip install gliomasuite[onnx]``): on par with PyTorch on an idle
machine, about three times faster in the forward pass when the cores are busy with other work, with
the same label map (``Testing/benchmarks/bench_cpu_options.py`` has the numbers); without it
PyTorch runs on the CPU too.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from .. import labels as L
from ..errors import GliomaSuiteError
from ..alignment import misregistration_warnings, not_mr_images, swapped_sequences
from ..brain_check import input_problems, what_to_do
from ..modalities import MODALITIES
from ..preprocess import PreparedStudy, prepare, restore_labels, restore_probabilities
from ..registry import (DEFAULT_SEGMENTATION_MODEL, MODELS_DIR, REDUCED_SEGMENTATION_MODEL, REGISTRY,
                        load_registry)
from .onnx_runner import OnnxVNet, onnxruntime_available
from .weights import load_weights

DEFAULT_MODEL = DEFAULT_SEGMENTATION_MODEL
REDUCED_MODEL = REDUCED_SEGMENTATION_MODEL  # for a study without T1 or T2

#: Enhancing islands smaller than this (voxels, i.e. mm^3) whose mean ET probability is below
#: ``ET_ISLAND_CONFIDENCE`` are relabelled necrosis (the Res-UNet seed's post-processing).
ET_ISLAND_VOXELS = 50
ET_ISLAND_CONFIDENCE = 0.7
#: Whole-tumour components smaller than this are dropped as noise (0.1 cm^3).
MIN_COMPONENT_VOXELS = 100
#: If the whole enhancing region is smaller than this (mm^3 at 1 mm), it is called necrosis: a
#: tumour with a few enhancing voxels is far more often a non-enhancing one with noise (the rule
#: nnU-Net's BraTS 2020 entry used, with the same 200-voxel threshold).
MIN_TOTAL_ET_VOXELS = 200
#: A whole tumour smaller than this (cm3) is reported as possibly no tumour at all: about the most the
#: shipped models labelled in tumour-free brains of their training cases (mirrored, see
#: segmentation.negatives): 0.95 cm3 for vnet-brats-v2, 0 for the default ensemble (whose member
#: reduced-v2 trained on those brains). Held-out tumour-free brains gave more (model cards).
NEAR_EMPTY_CM3 = 1.0
#: What runs the network's forward pass: ``auto`` is ONNX Runtime on the CPU when it is installed and
#: PyTorch otherwise (and always on a GPU); ``torch`` and ``onnxruntime`` force one.
ENGINES = ("auto", "torch", "onnxruntime")


@dataclass
class SegmentationResult:
    labels: "object"                       # SimpleITK image on the study's T1ce grid, BraTS labels
    probabilities: Optional["object"]      # SimpleITK vector image (WT, TC, ET) or None
    volumes_cm3: Dict[str, float]
    warnings: List[str] = field(default_factory=list)
    device: str = "cpu"
    engine: str = "torch"                  # what ran the network: "torch", "onnxruntime" ("a+b" if an
                                           # ensemble's members differed), "" if it did not run
    model: str = ""                        # registered name or weights file (load_model's model.name)
    #: Why the brain check refused the study (see gliomasuite.brain_check); then the map is empty and the
    #: network did not run. Empty when the check passed or was skipped.
    brain_check: List[str] = field(default_factory=list)
    #: With ``uncertainty=True``: the per-voxel uncertainty map (SimpleITK float image on the T1ce grid, see
    #: :mod:`.uncertainty`) and the regions most worth checking, largest first.
    uncertainty: Optional["object"] = None
    uncertain_regions: List[dict] = field(default_factory=list)


def registry() -> dict:
    return load_registry(REGISTRY)


class Ensemble:
    """Several networks whose region probabilities are averaged, with equal weights.

    A registry entry with ``members`` (names of other entries) loads as one: each member from its
    own checksummed file. Inference runs every member as it would run alone (its own resolution,
    engine and flips) and averages the probabilities before post-processing. The ensemble does
    without a modality only if every member does.
    """

    def __init__(self, members, name: str = ""):
        self.members = list(members)
        self.name = name
        optional = [set(getattr(m, "optional_modalities", ())) for m in self.members]
        self.optional_modalities = tuple(m for m in MODALITIES if all(m in o for o in optional))


class Refined:
    """Coarse networks (one network or an :class:`Ensemble`) whose region probabilities 1 mm refiners
    (:mod:`.refine`) redraw around the tumour; several refiners are averaged. A registry entry with
    ``coarse`` (an entry's name) and ``refiners`` (names) loads as one."""

    def __init__(self, coarse, refiners, name: str = ""):
        self.coarse = coarse
        self.refiners = list(refiners)
        self.name = name
        self.optional_modalities = tuple(getattr(coarse, "optional_modalities", ()))


def load_model(name_or_path: Optional[str] = None):
    """The shipped model by registry name (checksum verified), or a weights file given by path.

    An ensemble entry gives an :class:`Ensemble` and ``{"members": [each member's metadata]}``; a refined
    entry a :class:`Refined` and ``{"coarse": its metadata, "refiners": [each refiner's]}``.
    """
    name_or_path = name_or_path or DEFAULT_MODEL
    models = registry()["models"] if REGISTRY.exists() else {}
    if name_or_path in models and "refiners" in models[name_or_path]:
        entry = models[name_or_path]
        coarse, coarse_meta = load_model(entry["coarse"])
        loaded = [_load_refiner(models, name) for name in entry["refiners"]]
        if not loaded:
            raise GliomaSuiteError(f"The registered model {name_or_path!r} lists no refiners; reinstall GliomaSuite.")
        refined = Refined(coarse, [m for m, _ in loaded], str(name_or_path))
        _validated_inputs_only(refined, entry)
        return refined, {"coarse": coarse_meta, "refiners": [meta for _, meta in loaded]}
    if name_or_path in models and "members" in models[name_or_path]:
        members = models[name_or_path]["members"]
        bad = [m for m in members if m not in models or "members" in models[m]]
        if not members or bad:
            raise GliomaSuiteError(f"The registered ensemble {name_or_path!r} is damaged: its members must be "
                                   f"registered single networks ({', '.join(map(repr, bad)) or 'none listed'} "
                                   "is not); reinstall GliomaSuite.")
        loaded = [load_model(member) for member in members]
        ensemble = Ensemble([m for m, _ in loaded], str(name_or_path))
        _validated_inputs_only(ensemble, models[name_or_path])
        return ensemble, {"members": [meta for _, meta in loaded]}
    if name_or_path in models:
        entry = models[name_or_path]
        model, metadata = load_weights(MODELS_DIR / entry["file"], expected_sha256=entry["sha256"])
        _validated_inputs_only(model, entry)
    elif Path(name_or_path).exists():
        model, metadata = load_weights(name_or_path)
    else:
        known = ", ".join(sorted(models)) or "none installed"
        raise GliomaSuiteError(f"No model named {name_or_path!r} (known models: {known}) and no such weights file.")
    if metadata.get("refines"):
        raise GliomaSuiteError(f"{name_or_path} is a 1 mm refiner: it redraws another model's result and cannot "
                               "segment alone; choose a segmentation model.")
    model.name = str(name_or_path)  # what results report as the model used
    return model, metadata


def load_refiner(name_or_path: str):
    """A 1 mm refiner (:mod:`.refine`) by registry name or weights file: ``(network, metadata)``."""
    models = registry()["models"] if REGISTRY.exists() else {}
    return _load_refiner(models, name_or_path)


def _load_refiner(models: dict, name: str):
    if name in models and "file" in models[name]:
        model, metadata = load_weights(MODELS_DIR / models[name]["file"], expected_sha256=models[name]["sha256"])
    elif name not in models and Path(name).exists():
        model, metadata = load_weights(name)
    else:
        raise GliomaSuiteError(f"No refiner named {name!r}; reinstall GliomaSuite.")
    if not metadata.get("refines"):
        raise GliomaSuiteError(f"{name} is not a 1 mm refiner (its file does not say what it refines).")
    model.name = str(name)
    return model, metadata


def _validated_inputs_only(model, entry: dict) -> None:
    """A registered model does without a modality only if its registry entry says so too
    (``optional_inputs``): a network trained with modality dropout may cope without T1 or T2, but what
    its card reports was measured with all four (vnet-brats-cv4-v1's members, for example), so such
    studies go to the model validated without them."""
    if "optional_inputs" in entry:
        model.optional_modalities = tuple(m for m in getattr(model, "optional_modalities", ())
                                          if m in entry["optional_inputs"])


def load_network(name_or_path: str):
    """:func:`load_model` for work on one network's own layers (calibration, diagnosis, CPU options):
    an ensemble is refused with the names of its members."""
    model, metadata = load_model(name_or_path)
    if isinstance(model, Ensemble):
        raise GliomaSuiteError(f"{model.name} is an ensemble; give one of its networks at a time "
                               f"({', '.join(m.name for m in model.members)}).")
    return model, metadata


def default_model_for(modalities) -> str:
    """The shipped model for a study with these modalities: the default one when all four are there,
    else the one trained to do without T1 and T2 (if it is installed)."""
    if set(MODALITIES) <= set(modalities):
        return DEFAULT_MODEL
    models = registry()["models"] if REGISTRY.exists() else {}
    return REDUCED_MODEL if REDUCED_MODEL in models else DEFAULT_MODEL


def required_modalities(model) -> tuple:
    """The modalities a loaded model cannot do without, in the loader's order (T1, T1ce, T2, FLAIR)."""
    optional = set(getattr(model, "optional_modalities", ()))
    return tuple(m for m in MODALITIES if m not in optional)


def choose_device(choice: str = "auto") -> torch.device:
    """``auto`` (CUDA when PyTorch sees it, else CPU), ``cpu``, ``gpu``/``cuda`` or ``cuda:N``."""
    choice = (choice or "auto").lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice in ("gpu", "cuda") or choice.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise GliomaSuiteError("A GPU was requested but PyTorch sees no CUDA device; choose CPU or auto.")
        return torch.device("cuda" if choice == "gpu" else choice)
    if choice == "cpu":
        return torch.device("cpu")
    raise GliomaSuiteError(f"Unknown device {choice!r}; use auto, cpu or gpu.")


def network_for(model, device: torch.device, engine: str = "auto"):
    """What runs ``model``'s forward pass on ``device``: ``(network, engine name, warning or None)``.

    The network is ``model`` itself (PyTorch) or, on the CPU, its ONNX Runtime twin built in memory
    from the same weights. With ``auto`` an ONNX Runtime that is missing or cannot load the network
    means PyTorch (the warning says why when it was installed); asking for ``onnxruntime`` there is
    an error.
    """
    if engine not in ENGINES:
        raise GliomaSuiteError(f"Unknown engine {engine!r}; use {', '.join(ENGINES)}.")
    if isinstance(model, Refined):
        made = [network_for(part, device, engine) for part in [model.coarse] + model.refiners]
        problems = list(dict.fromkeys(problem for _, _, problem in made if problem))
        engines = "+".join(dict.fromkeys(e for _, used, _ in made for e in used.split("+")))
        return (Refined(made[0][0], [network for network, _, _ in made[1:]], model.name), engines,
                " ".join(problems) or None)
    if isinstance(model, Ensemble):
        made = [network_for(member, device, engine) for member in model.members]
        problems = list(dict.fromkeys(problem for _, _, problem in made if problem))
        engines = "+".join(dict.fromkeys(used for _, used, _ in made))  # "onnxruntime", or e.g. "onnxruntime+torch"
        return Ensemble([network for network, _, _ in made], model.name), engines, " ".join(problems) or None
    model = model.to(device).eval()
    if engine == "torch" or (engine == "auto" and device.type != "cpu"):
        return model, "torch", None
    if device.type != "cpu":
        raise GliomaSuiteError("The onnxruntime engine runs on the CPU only; choose device cpu or engine auto.")
    if not onnxruntime_available():
        if engine == "onnxruntime":
            raise GliomaSuiteError("The onnxruntime engine needs the onnxruntime and onnx packages; install them "
                                   "with pip install 'gliomasuite[onnx]', or choose engine auto or torch.")
        return model, "torch", None
    # A model kept loaded (a batch worker's) keeps its session, made once, not per study; another thread count,
    # layer or weight tensor, or a weight changed in place (torch counts that in each tensor's _version), makes
    # a new one.
    key = (torch.get_num_threads(), repr(model),
           tuple((t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers())))
    kept = model.__dict__.get("_onnx_session")
    if kept is not None and kept[0] == key:
        return kept[1], "onnxruntime", None
    try:
        network = OnnxVNet(model, key[0])
        model.__dict__["_onnx_session"] = (key, network)
        return network, "onnxruntime", None
    except Exception as exc:  # an incompatible onnxruntime build, or a network it cannot express
        if engine == "onnxruntime":
            raise GliomaSuiteError(f"ONNX Runtime could not load the V-Net ({exc}); choose engine torch.") from exc
        return model, "torch", (f"ONNX Runtime could not load the V-Net ({exc}); it ran on PyTorch instead, "
                                "which is slower on the CPU.")


def _pad_to(array: torch.Tensor, divisor: int):
    shape = array.shape[-3:]
    target = [int(np.ceil(s / divisor) * divisor) for s in shape]
    pads = []
    for s, t in reversed(list(zip(shape, target))):
        pads += [0, t - s]
    return torch.nn.functional.pad(array, pads), shape


def predict_probabilities(model, array: np.ndarray, device: torch.device, tta: bool = False,
                          window: Optional[int] = None, progress: Callable[[float, str], None] = None,
                          spread: bool = False):
    """Region probabilities (3, z, y, x) for a prepared array (4, z, y, x).

    ``model`` is a V-Net or what :func:`network_for` made of it (its ONNX Runtime twin), or an
    :class:`Ensemble` of those (the mean of its members' probabilities).

    ``spread``: also return the standard deviation of each region's probability over the passes
    (every member, and with ``tta`` each of its eight flips), equal weights: ``(mean, std)``. It is
    the disagreement the uncertainty map is made of (:func:`uncertainty_from_spread`).

    A :class:`Refined` model runs its coarse networks so (flips and spread included), then its refiners on
    their mean once, without flips; the spread stays the coarse passes'.
    """
    if isinstance(model, Refined):
        from .refine import refine_probabilities

        coarse = predict_probabilities(model.coarse, array, device, tta=tta, window=window, spread=spread,
                                       progress=(lambda f, m: progress(0.9 * f, m)) if progress else None)
        mean, std = coarse if spread else (coarse, None)
        if progress:
            progress(0.9, "1 mm refinement around the tumour")
        refined = refine_probabilities(model.refiners, array, mean, device)
        return (refined, std) if spread else refined
    if isinstance(model, Ensemble):
        n = len(model.members)
        total, squares = None, None
        inputs = {}  # members of one resolution and divisor share the pooled, padded input (made once)
        for k, member in enumerate(model.members):
            step = (lambda f, m, k=k: progress((k + f) / n, f"Network {k + 1} of {n}: {m}")) if progress else None
            if isinstance(member, Ensemble):
                probs = predict_probabilities(member, array, device, tta=tta, window=window, progress=step,
                                              spread=spread)
            else:
                form = (getattr(member, "input_downsample", 1), member.divisor)
                if form not in inputs:
                    inputs[form] = _network_input(array, *form)
                probs = _member_probabilities(member, inputs[form], device, tta, window, step, spread)
            if spread:
                probs, std = probs
                second = std ** 2 + probs ** 2  # this member's mean of p^2 over its passes
                squares = second if squares is None else squares + second
            if total is None:
                total = probs
            else:
                total += probs  # in place: no new full-size array per member
        mean = total / n
        if spread:
            return mean, np.sqrt(np.maximum(squares / n - mean ** 2, 0.0))
        return mean

    network_input = _network_input(array, getattr(model, "input_downsample", 1), model.divisor)
    return _member_probabilities(model, network_input, device, tta, window, progress, spread)


def _network_input(array: np.ndarray, factor: int, divisor: int):
    """``(x, shape)``: the prepared array as the network takes it (pooled to its resolution, padded to its
    divisor), and the array's own (z, y, x) shape that the probabilities are cut back to."""
    x = torch.from_numpy(array)[None]
    shape = x.shape[-3:]
    if factor > 1:
        # The network works on 2 mm voxels: pool the 1 mm input, and upsample its logits below.
        x, _ = _pad_to(x, factor)
        x = torch.nn.functional.avg_pool3d(x, factor)
    x, _ = _pad_to(x, divisor)
    return x, shape


def _member_probabilities(model, network_input, device: torch.device, tta: bool, window: Optional[int],
                          progress: Optional[Callable[[float, str], None]], spread: bool):
    """One network's region probabilities from :func:`_network_input` (see :func:`predict_probabilities`)."""
    if isinstance(model, torch.nn.Module):
        model = model.to(device).eval()
    factor = getattr(model, "input_downsample", 1)
    x, shape = network_input
    x = x.to(device)
    roi = [min(window, s) if window else s for s in x.shape[-3:]]
    flips = [()] + ([(2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)] if tta else [])
    use_amp = device.type == "cuda"
    total, squares = None, None
    with torch.inference_mode(), torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
        for i, dims in enumerate(flips):
            if progress:
                progress(i / len(flips), f"V-Net pass {i + 1} of {len(flips)}")
            xi = torch.flip(x, dims) if dims else x
            logits = _windowed(model, xi, roi, window)
            logits = torch.flip(logits, dims) if dims else logits
            if factor > 1:
                # Upsample only the coarse voxels the crop's voxels are interpolated from (up to one
                # beyond its edge), not the padding: the same values, for a fifth less work.
                needed = [min(-(-s // factor) + 1, n) for s, n in zip(shape, logits.shape[2:])]
                logits = torch.nn.functional.interpolate(logits[..., : needed[0], : needed[1], : needed[2]].float(),
                                                         scale_factor=factor, mode="trilinear", align_corners=False)
            prob = logits[0, :, : shape[0], : shape[1], : shape[2]].float().sigmoid_()  # in place, as the sum below
            if total is None:
                total = prob
            else:
                total += prob
            if spread:
                squares = prob * prob if squares is None else squares + prob * prob
        if len(flips) > 1:
            total /= len(flips)
    total = total.contiguous()  # (the sum may be a view of the upsampled logits; callers get a plain array)
    if spread:
        mean = total.cpu().numpy()
        return mean, np.sqrt(np.maximum(squares.cpu().numpy() / len(flips) - mean ** 2, 0.0))
    return total.cpu().numpy()


def _windowed(model, x: torch.Tensor, roi, window: Optional[int]) -> torch.Tensor:
    """The network's logits for ``x``: MONAI's sliding-window inference when a window smaller than the
    input is asked for, else one pass over the whole input. One window covering everything is what
    MONAI would run too; calling the network directly skips importing MONAI, which took 2-6 s of a
    cold ``segment`` on 2 cores (``python -X importtime``), for the same label maps
    (``Testing/core/test_segmentation.py`` compares both paths on real cases)."""
    if window is None or list(roi) == list(x.shape[-3:]):
        return model(x)
    from monai.inferers import sliding_window_inference

    return sliding_window_inference(x, roi, 1, model, overlap=0.25, mode="gaussian")


def _components(mask: np.ndarray):
    """Face-connected components of a 3D mask: ``(labels, count)``, as ``scipy.ndimage.label`` gives them
    (its default structure) up to their numbering. SimpleITK's filter, already loaded, spares a cold
    ``segment`` the 0.26 s import of scipy.ndimage."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    labels = sitk.ConnectedComponent(image, False)
    count = int(sitk.GetArrayViewFromImage(labels).max()) if mask.any() else 0
    return sitk.GetArrayFromImage(labels), count


def postprocess(probs: np.ndarray, brain: Optional[np.ndarray] = None) -> np.ndarray:
    """Nested region probabilities to a BraTS label map, with connected-component clean-up."""
    wt = probs[0] > 0.5
    if brain is not None:
        wt &= brain
    # Component sizes and sums by np.bincount: the numbers ndimage.sum/mean give, without their
    # per-call float conversion of the whole crop (a third of post-processing's time).
    components, n = _components(wt)
    if n:
        sizes = np.bincount(components.ravel(), minlength=n + 1)
        keep = sizes >= MIN_COMPONENT_VOXELS  # by component number: a table lookup (np.isin sorts the whole crop)
        keep[0] = False
        wt = keep[components]
    tc = wt & (probs[1] > 0.5)
    et = tc & (probs[2] > 0.5)
    islands, n = _components(et)
    if n:
        inside = np.flatnonzero(islands)  # only the islands' voxels: the same sums, in the same order
        flat = islands.ravel()[inside]
        sizes = np.bincount(flat, minlength=n + 1)[1:]
        confidence = np.bincount(flat, weights=probs[2].ravel()[inside], minlength=n + 1)[1:] / sizes
        weak = np.concatenate([[False], (sizes < ET_ISLAND_VOXELS) & (confidence < ET_ISLAND_CONFIDENCE)])
        et &= ~weak[islands]
    if et.sum() < MIN_TOTAL_ET_VOXELS:
        et[:] = False
    return L.regions_to_labels(wt, tc, et)


def volumes_cm3(label_image) -> Dict[str, float]:
    import SimpleITK as sitk

    return L.volumes_cm3(sitk.GetArrayViewFromImage(label_image), label_image.GetSpacing())


def segment_prepared(model, prepared: PreparedStudy, device: torch.device, tta: bool = False,
                     window: Optional[int] = None, progress=None, spread: bool = False):
    """``(labels, probabilities)`` of the crop; with ``spread``, ``(labels, probabilities, std)``."""
    probs = predict_probabilities(model, prepared.array, device, tta=tta, window=window, progress=progress,
                                  spread=spread)
    if spread:
        probs, std = probs
        return postprocess(probs, prepared.brain), probs, std
    return postprocess(probs, prepared.brain), probs


def with_absent_as_zeros(images: Dict[str, object], absent) -> Dict[str, object]:
    """``images`` (modality -> image) plus an all-zero image on the T1ce grid for each ``absent``
    modality: how a network trained with modality dropout sees a missing one (zscore_brain leaves a
    constant image at 0, the brain's mean, exactly as dropout does in training)."""
    import SimpleITK as sitk

    filled = dict(images)
    for m in absent:
        filled[m] = sitk.Image(images["t1ce"]) * 0
    return filled


def _not_segmented(prepared: PreparedStudy, problems: List[str], warnings: List[str], model,
                   probabilities: bool) -> SegmentationResult:
    warnings.append("Not segmented: these images do not look like skull-stripped brain MRI with each sequence in "
                    "its place: " + "; ".join(problems) + "." + what_to_do(problems) + " The label map is empty. "
                    "If they are skull-stripped brain MRI, run again with --skip-brain-check (in Slicer, answer Yes "
                    "when asked to segment anyway).")
    empty = restore_labels(np.zeros(prepared.shape, np.uint8), prepared)
    zeros = restore_probabilities(np.zeros((3,) + prepared.shape, np.float32), prepared) if probabilities else None
    return SegmentationResult(empty, zeros, volumes_cm3(empty), warnings, "", "", getattr(model, "name", ""),
                              problems)


def segment_study(study, model=None, device: str = "auto", tta: bool = False, probabilities: bool = False,
                  window: Optional[int] = None, progress: Callable[[float, str], None] = None,
                  engine: str = "auto", check_brain: bool = True, uncertainty: bool = False) -> SegmentationResult:
    """Segment a loaded :class:`gliomasuite.study.Study`; the result is on its T1ce grid.

    ``engine`` picks what runs the network (see :data:`ENGINES`); the result says which did.
    ``check_brain``: a study that fails the brain check (:mod:`gliomasuite.brain_check`) is not
    segmented; the result is an empty map whose ``brain_check`` and warnings say why. False
    segments it anyway (and warns).
    ``uncertainty``: also make the uncertainty map and the regions most worth checking
    (:mod:`.uncertainty`); this runs the flip passes, so the label map is the one ``tta`` gives.
    """
    tta = tta or uncertainty
    report = progress or (lambda f, m: None)
    if model is None:
        model, _ = load_model()
    needed = required_modalities(model)
    missing = [m for m in needed if m not in study.images]
    if missing:
        raise GliomaSuiteError(f"This model needs {', '.join(m.upper() for m in needed)}; the study has no "
                               f"{' or '.join(m.upper() for m in missing)}.")
    warnings = []
    absent = [m for m in ("t1", "t2") if m not in study.images]
    images = with_absent_as_zeros(study.images, absent)
    report(0.05, "Preparing the images (orientation, 1 mm, brain crop, normalisation)")
    prepared = prepare(images)
    if not prepared.brain.any():
        raise GliomaSuiteError("The images contain no brain signal (all zero after loading); check the study.")
    swap_problems, swap_warnings = swapped_sequences(study.images)
    problems = (not_mr_images(study.images) + input_problems(prepared, [m for m in MODALITIES if m not in absent])
                + swap_problems)
    warnings.extend(misregistration_warnings(study.images) + swap_warnings)
    if problems and check_brain:
        report(1.0, "Not segmented (see the warning)")
        return _not_segmented(prepared, problems, warnings, model, probabilities)
    if problems:
        warnings.append("Segmented although the brain check failed (as asked): " + "; ".join(problems) +
                        ". The label map may be meaningless.")
    if absent:
        model_name = getattr(model, "name", "the model")
        warnings.append(f"No {' or '.join(a.upper() for a in absent)} in this study: segmented with {model_name}, "
                        "trained without them; expect lower accuracy (see its model card).")
    torch_device = choose_device(device)
    network, engine_used, problem = network_for(model, torch_device, engine)
    if problem:
        warnings.append(problem)
    runs_on = torch_device.type.upper() + (" (ONNX Runtime)" if "onnxruntime" in engine_used else "")
    report(0.15, f"Running the V-Net on {runs_on}")
    try:
        labels, probs, *std = segment_prepared(network, prepared, torch_device, tta=tta, window=window,
                                               progress=lambda f, m: report(0.15 + 0.75 * f, m), spread=uncertainty)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        warnings.append("The GPU ran out of memory; the study was segmented on the CPU instead.")
        torch_device = torch.device("cpu")
        network, engine_used, problem = network_for(model, torch_device, engine)
        if problem:
            warnings.append(problem)
        labels, probs, *std = segment_prepared(network, prepared, torch_device, tta=tta, window=window,
                                               spread=uncertainty)
    report(0.92, "Mapping the labels back onto the T1ce grid")
    label_image = restore_labels(labels, prepared)
    volumes = volumes_cm3(label_image)
    if volumes["WT"] == 0:
        warnings.append("No tumour was found in this study (the label map is empty). If a tumour is visible, "
                        "check that the images are skull-stripped brain MRI with the modalities named correctly.")
    elif volumes["WT"] < NEAR_EMPTY_CM3:
        warnings.append(f"Only {volumes['WT']:.2f} cm3 was labelled tumour: this study may hold no tumour at all "
                        "(tumour-free brains the models trained on come out below 1 cm3, but ones they never saw "
                        "have given 15 cm3 and more). Review the segments before using them.")
    prob_image = restore_probabilities(probs, prepared) if probabilities else None
    result = SegmentationResult(label_image, prob_image, volumes, warnings, torch_device.type, engine_used,
                                getattr(model, "name", ""))
    if uncertainty:
        import SimpleITK as sitk

        from .uncertainty import uncertain_regions, uncertainty_from_spread

        std = std[0]
        result.uncertainty = sitk.VectorIndexSelectionCast(
            restore_probabilities(uncertainty_from_spread(std)[None], prepared), 0)
        result.uncertain_regions = uncertain_regions(std, labels, prepared.brain)
    return result
