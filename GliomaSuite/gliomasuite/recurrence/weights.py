"""The recurrence network's weights: float16 arrays and the architecture as JSON in a plain ``.npz``.

As for the V-Net (:mod:`gliomasuite.segmentation.weights`): ``numpy.load(allow_pickle=False)`` reads only
arrays, so the file cannot run code, and its SHA-256 is checked against the registry before it is read.
"""

import json
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from ..errors import GliomaSuiteError
from ..segmentation.weights import sha256
from .network import RecurrenceNet

_HEADER = "__architecture_json__"
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
    path = Path(path)
    if not path.is_file():
        raise GliomaSuiteError(f"The recurrence model file {path} does not exist; reinstall GliomaSuite.")
    if expected_sha256 is not None and sha256(path) != expected_sha256:
        raise GliomaSuiteError(f"The recurrence model file {path} does not match its registered checksum; it is "
                               "damaged or was replaced, so it was not loaded and no recurrence probability is given. "
                               "Reinstall GliomaSuite to restore it.")
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data[_HEADER]).decode("utf-8"))
            state = {k: torch.from_numpy(data[k].astype(np.float32)) for k in data.files if k != _HEADER}
    except (ValueError, KeyError, OSError) as exc:
        raise GliomaSuiteError(f"The recurrence model file {path} cannot be read ({exc}).") from exc
    if header.get("architecture") != ARCHITECTURE:
        raise GliomaSuiteError(f"The file {path} holds a {header.get('architecture')!r} network, not the recurrence "
                               "network.")
    model = RecurrenceNet(**header["config"])
    model.load_state_dict(state)
    model.eval()
    return model, header.get("metadata", {})
