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


def load_registry(path: Path = REGISTRY) -> dict:
    """The segmentation model registry (``models.json``): names, files, SHA-256, members."""
    return json.loads(Path(path).read_text())


def provenance(**models) -> dict:
    """What made an output file: this package's version and the models that ran (name -> id)."""
    return {"gliomasuite_version": __version__, **{k: v for k, v in models.items() if v}}
