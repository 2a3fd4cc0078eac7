"""Where the shipped models live, readable without torch.

The weights, fitted survival models and their cards are package data of ``gliomasuite`` itself
(``gliomasuite/models``), so a wheel or sdist installed anywhere carries them, and the Slicer module,
which holds the same package, reads the very same files: one copy serves both.
"""

import json
from pathlib import Path

from . import __version__

MODELS_DIR = Path(__file__).resolve().parent / "models"
REGISTRY = MODELS_DIR / "models.json"


#: The shipped defaults, by name (here, without torch, so that the command line's help can name them).
DEFAULT_SEGMENTATION_MODEL = "vnet-brats-cv4-v1"
#: Chosen instead of the default for a study without T1 or T2 (trained with those modalities dropped).
REDUCED_SEGMENTATION_MODEL = "vnet-brats-reduced-v2"
DEFAULT_SURVIVAL_MODEL = "survival-brats2020-v1"
DEFAULT_RECURRENCE_MODEL = "recurrence-sim-v2"


def load_registry(path: Path = REGISTRY) -> dict:
    """The segmentation model registry (``models.json``): names, files, SHA-256, members."""
    return json.loads(Path(path).read_text())


def provenance(**models) -> dict:
    """What made an output file: this package's version and the models that ran (name -> id)."""
    return {"gliomasuite_version": __version__, **{k: v for k, v in models.items() if v}}


def segmentation_model_names() -> list:
    """The registered segmentation models' names ([] when the registry cannot be read); not the 1 mm refiners,
    which cannot segment alone."""
    try:
        return sorted(name for name, entry in load_registry().get("models", {}).items() if not entry.get("refiner"))
    except (OSError, ValueError):
        return []


def survival_model_names() -> list:
    """The shipped survival models' names."""
    return sorted(p.stem for p in MODELS_DIR.glob("survival-*.json")) if MODELS_DIR.is_dir() else []
