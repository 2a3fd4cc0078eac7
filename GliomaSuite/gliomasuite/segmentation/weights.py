"""Shipped network weights: a plain ``.npz`` of float16 arrays plus the architecture as JSON.

No pickle anywhere: ``numpy.load(allow_pickle=False)`` reads only arrays, so a weights file can
never run code. The architecture is rebuilt from the JSON stored inside the file, and the file's
SHA-256 is checked against the model registry before anything is read.
"""

import hashlib
import json
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from ..errors import GliomaSuiteError
from .vnet import VNet

_CONFIG_KEY = "__architecture_json__"


#: State-dict entries that are statistics, not learned weights (see vnet.py, ``norm="cohort"``).
_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(model: VNet, path, metadata: Optional[dict] = None, input_downsample: int = 1) -> str:
    """Write ``model`` as float16 arrays; returns the file's SHA-256.

    ``input_downsample`` 2 means the network was trained on 2 mm voxels (average-pooled 1 mm input).
    """
    # Learned weights as float16 (half the size, no measurable change in the output); fixed
    # normalisation statistics (norm="cohort") as float32: variances span too many decades for float16.
    arrays = {name: tensor.detach().cpu().to(torch.float32 if name.endswith(_STATISTICS) else torch.float16).numpy()
              for name, tensor in model.state_dict().items()}
    header = {"architecture": "VNet", "config": model.config, "input_downsample": int(input_downsample),
              "metadata": metadata or {}}
    arrays[_CONFIG_KEY] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return sha256(path)


def read_network_file(path, expected_sha256: Optional[str] = None, what: str = "model weights file",
                      architecture: str = "VNet") -> Tuple[dict, dict]:
    """(header, state dict of float32 tensors) of one of our ``.npz`` network files, checked first: it
    exists, its SHA-256 is the registered one (when given), it holds only arrays (no pickle, so no code
    runs) and the ``architecture`` asked for."""
    path = Path(path)
    if not path.is_file():
        raise GliomaSuiteError(f"The {what} {path} does not exist; reinstall GliomaSuite or point --model at a "
                               "weights file.")
    if expected_sha256 is not None:
        actual = sha256(path)
        if actual != expected_sha256:
            raise GliomaSuiteError(
                f"The {what} {path} does not match its registered checksum (SHA-256 {actual[:12]}... instead of "
                f"{expected_sha256[:12]}...); it is damaged or was replaced, so it was not loaded. Reinstall "
                "GliomaSuite to restore the shipped weights.")
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data[_CONFIG_KEY]).decode("utf-8"))
            state = {k: torch.from_numpy(data[k].astype(np.float32)) for k in data.files if k != _CONFIG_KEY}
    except (ValueError, KeyError, OSError) as exc:
        raise GliomaSuiteError(f"The {what} {path} cannot be read ({exc}); it is not a GliomaSuite weights "
                               "file.") from exc
    if header.get("architecture") != architecture:
        raise GliomaSuiteError(f"The {what} {path} holds a {header.get('architecture')!r} network, not a "
                               f"{architecture}.")
    return header, state


def load_weights(path, expected_sha256: Optional[str] = None) -> Tuple[VNet, dict]:
    """Rebuild the network from a weights file; refuses a file whose checksum does not match."""
    header, state = read_network_file(path, expected_sha256)
    config = dict(header["config"])
    model = VNet(**config)
    model.load_state_dict(state)
    model.input_downsample = int(header.get("input_downsample", 1))
    # Modalities the network was trained to do without (modality dropout); absent from older files.
    model.optional_modalities = tuple(header.get("metadata", {}).get("optional_modalities", ()))
    model.eval()
    return model, header.get("metadata", {})
