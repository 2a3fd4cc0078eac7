"""The recurrence network's weights: float16 arrays and the architecture as JSON in a plain ``.npz``.

As for the V-Net (:mod:`gliomasuite.segmentation.weights`): ``numpy.load(allow_pickle=False)`` reads only
arrays, so the file cannot run code, and its SHA-256 is checked against the registry before it is read.
"""

import json
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from ..segmentation.weights import _CONFIG_KEY as _HEADER, read_network_file, sha256
from .network import RecurrenceNet

ARCHITECTURE = "RecurrenceNet"


def save_recurrence_weights(model: RecurrenceNet, path, metadata: Optional[dict] = None) -> str:
    arrays = {k: v.detach().cpu().to(torch.float16).numpy() for k, v in model.state_dict().items()}
    header = {"architecture": ARCHITECTURE, "config": model.config, "metadata": metadata or {}}
    arrays[_HEADER] = np.frombuffer(json.dumps(header).encode("utf-8"), np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    tmp.replace(path)
    return sha256(path)


def load_recurrence_weights(path, expected_sha256: Optional[str] = None) -> Tuple[RecurrenceNet, dict]:
    """Rebuild the recurrence network from its file (checked by :func:`read_network_file` first)."""
    header, state = read_network_file(path, expected_sha256, what="recurrence model file", architecture=ARCHITECTURE)
    model = RecurrenceNet(**header["config"])
    model.load_state_dict(state)
    model.eval()
    return model, header.get("metadata", {})
