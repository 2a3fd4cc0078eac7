"""The V-Net on ONNX Runtime: the faster CPU path when the optional ``onnxruntime`` is installed.

Measured on a real BraTS case with 2 threads (``Testing/benchmarks/bench_cpu_options.py``): with
the two cores shared with other work, ONNX Runtime runs this network's forward pass in about a third
of PyTorch's time; on an idle machine the two are on par. Same label map either way. On a GPU
PyTorch stays the choice.

No model file is ever read: the ONNX graph is written here, in memory, from the layers of a loaded
:class:`~gliomasuite.segmentation.vnet.VNet` -- whose weights came from a checksum-verified ``.npz``
-- so there is nothing on disk to verify or to tamper with. The graph follows ``VNet.forward`` in
evaluation mode (full-resolution head only); ``Testing/core/test_segmentation.py`` checks the two
agree, so a change to the network that is not mirrored here fails there.

    network = OnnxVNet(model, threads=2)
    logits = network(torch.zeros(1, 4, 64, 64, 64))   # as model(...) in eval mode, within ~1e-4

Importing the ``onnx`` package to write the graph took 0.8 s of every cold ``segment``, so the
serialized graph is kept in the user's cache folder (``$XDG_CACHE_HOME/gliomasuite/onnx``, else
``~/.cache/...``; ``GLIOMASUITE_CACHE`` names another, ``off`` turns it off), named by the SHA-256 of
the network's configuration and weights and of this file's graph version, and read back only if its
bytes match the SHA-256 written beside it. It is derived from checksum-verified weights and holds no
code; deleting it costs only the rebuild.
"""

import hashlib
import os
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from torch import nn

from .vnet import ResidualStage, VNet

#: ONNX opset of the graph: InstanceNormalization, PRelu, Conv, ConvTranspose, Add and Concat are
#: all stable long before it, so any onnxruntime from 1.14 on runs it.
OPSET = 17
#: Bump when the graph written by :func:`vnet_to_onnx` changes, so cached graphs are rebuilt.
GRAPH_VERSION = 1


def onnxruntime_available() -> bool:
    """Both packages installed (found without importing them: ``onnx`` alone takes 0.8 s to import)."""
    from importlib.util import find_spec

    return find_spec("onnxruntime") is not None and find_spec("onnx") is not None


class _GraphBuilder:
    """Appends ONNX nodes and weight initialisers for the layer types the V-Net is made of."""

    def __init__(self):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: List = []
        self.initializers: List = []
        self._count = 0

    def _name(self, kind: str) -> str:
        self._count += 1
        return f"{kind}_{self._count}"

    def _weight(self, tensor: torch.Tensor, shape=None) -> str:
        name = self._name("w")
        array = tensor.detach().cpu().float().numpy()
        self.initializers.append(self.numpy_helper.from_array(array.reshape(shape) if shape else array, name))
        return name

    def _node(self, op: str, inputs: List[str], **attributes) -> str:
        out = self._name(op.lower())
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=out, **attributes))
        return out

    def add(self, a: str, b: str) -> str:
        return self._node("Add", [a, b])

    def concat(self, a: str, b: str) -> str:
        return self._node("Concat", [a, b], axis=1)

    def module(self, m: nn.Module, x: str) -> str:
        if isinstance(m, nn.Sequential):
            for child in m:
                x = self.module(child, x)
            return x
        if isinstance(m, nn.Identity):
            return x
        if isinstance(m, ResidualStage):
            return self.module(m.act, self.add(self.module(m.body, x), self.module(m.skip, x)))
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            if m.padding_mode != "zeros" or not isinstance(m.padding, tuple):
                raise ValueError(f"{m} cannot be written as ONNX (only explicit zero padding is supported)")
            inputs = [x, self._weight(m.weight)] + ([self._weight(m.bias)] if m.bias is not None else [])
            attributes = dict(kernel_shape=list(m.kernel_size), strides=list(m.stride), pads=list(m.padding) * 2,
                              dilations=list(m.dilation), group=m.groups)
            if isinstance(m, nn.ConvTranspose3d):
                return self._node("ConvTranspose", inputs, output_padding=list(m.output_padding), **attributes)
            return self._node("Conv", inputs, **attributes)
        if isinstance(m, nn.InstanceNorm3d):
            if not m.affine:
                raise ValueError(f"{m}: only affine instance norm is supported")
            if m.track_running_stats:
                # Fixed (cohort) statistics in evaluation mode: exactly ONNX's BatchNormalization.
                return self._node("BatchNormalization", [x, self._weight(m.weight), self._weight(m.bias),
                                                         self._weight(m.running_mean), self._weight(m.running_var)],
                                  epsilon=float(m.eps))
            return self._node("InstanceNormalization", [x, self._weight(m.weight), self._weight(m.bias)],
                              epsilon=float(m.eps))
        if isinstance(m, nn.PReLU):
            # One slope per channel, broadcast over (z, y, x); a single shared slope broadcasts as is.
            shape = (-1, 1, 1, 1) if m.num_parameters > 1 else None
            return self._node("PRelu", [x, self._weight(m.weight, shape)])
        raise ValueError(f"{type(m).__name__} has no ONNX translation here; update onnx_runner.py with vnet.py")


def vnet_to_onnx(model: VNet, check: bool = False):
    """An in-memory ``onnx.ModelProto`` computing ``model``'s evaluation-mode forward pass.

    ``check`` runs ``onnx.checker`` on it (the tests do). Segment does not: ONNX Runtime validates the
    graph as it loads it, and a graph it refuses sends ``auto`` to PyTorch with a warning.
    """
    from onnx import TensorProto, checker, helper

    graph = _GraphBuilder()
    x = "image"
    skips = []
    for level, stage in enumerate(model.encoder):
        x = graph.module(stage, x)
        if level < len(model.down):
            skips.append(x)
            x = graph.module(model.down[level], x)
    for i, (up, stage) in enumerate(zip(model.up, model.decoder)):
        x = graph.module(stage, graph.concat(graph.module(up, x), skips[-1 - i]))
    x = graph.module(model.heads[0], x)
    graph.nodes.append(helper.make_node("Identity", [x], ["logits"], name="logits"))
    spatial = ["batch", model.config["in_channels"], "z", "y", "x"]
    onnx_graph = helper.make_graph(
        graph.nodes, "vnet",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, spatial)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", model.config["out_channels"], "z", "y", "x"])],
        graph.initializers,
    )
    proto = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="gliomasuite")
    if check:
        checker.check_model(proto)
    return proto


def graph_key(model: VNet) -> str:
    """SHA-256 naming ``model``'s graph: its configuration, every weight and buffer, the graph version."""
    digest = hashlib.sha256(f"{GRAPH_VERSION}:{OPSET}:{sorted(model.config.items())}".encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _cache_dir() -> Optional[Path]:
    chosen = os.environ.get("GLIOMASUITE_CACHE")
    if chosen == "off":
        return None
    if chosen:
        return Path(chosen) / "onnx"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gliomasuite" / "onnx"


def serialized_graph(model: VNet) -> bytes:
    """The ONNX graph of ``model`` as bytes: from the cache when a verified copy is there, else built
    (and cached; a cache that cannot be written is skipped silently: it only saves time)."""
    folder = _cache_dir()
    key = graph_key(model)
    if folder is not None:
        graph, checksum = folder / f"{key}.onnx", folder / f"{key}.onnx.sha256"
        try:
            data = graph.read_bytes()
            if hashlib.sha256(data).hexdigest() == checksum.read_text().strip():
                return data
        except OSError:
            pass
    data = vnet_to_onnx(model).SerializeToString()
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for path, content in ((graph, data), (checksum, hashlib.sha256(data).hexdigest().encode())):
                tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
                tmp.write_bytes(content)
                os.replace(tmp, path)
        except OSError:
            pass
    return data


class OnnxVNet:
    """A V-Net's evaluation-mode forward pass on ONNX Runtime's CPU provider.

    It stands in for the network in :func:`~gliomasuite.segmentation.inference.predict_probabilities`:
    called with a torch tensor (N, 4, z, y, x) it returns the logits tensor, and it carries the
    network's ``divisor`` and ``input_downsample``. ``threads`` defaults to PyTorch's thread count.
    """

    def __init__(self, model: VNet, threads: Optional[int] = None):
        import onnxruntime as ort

        self.divisor = model.divisor
        self.input_downsample = getattr(model, "input_downsample", 1)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle threads sleep instead of spinning: spinning ones kept a core from PyTorch's upsampling
        # right after the forward pass (measured slower on 2 cores), and from Slicer's GUI.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(serialized_graph(model), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        image = np.ascontiguousarray(x.detach().cpu().float().numpy())
        return torch.from_numpy(self.session.run(["logits"], {"image": image})[0])
