"""Why a network with per-study (instance) normalisation finds tumour in a tumour-free brain.

Takes a labelled case whose tumour stays in one hemisphere, makes its tumour-free twin by mirroring
the free hemisphere (``gliomasuite.segmentation.negatives``), and segments the twin twice with the
same weights: once normalising every layer by the twin's own statistics (what the network does),
once with the statistics each layer saw on the original, tumour-bearing scan. If the second finds
far less tumour, the false tumour comes from normalising a tumour-free input by its own statistics,
which is what ``gliomasuite calibrate-segmentation`` (fixed cohort statistics) removes.

    .venv/bin/python tools/diagnose_normalisation.py --case $GLIOMASUITE_DATA/brats/Brats18_CBICA_AOZ_1 \
        --model vnet-brats-v1
"""

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "GliomaSuite"))

import torch  # noqa: E402

from gliomasuite.preprocess import prepare  # noqa: E402
from gliomasuite.segmentation.inference import load_network, segment_prepared  # noqa: E402
from gliomasuite.segmentation.negatives import write_mirrored_case  # noqa: E402
from gliomasuite.study import load_study  # noqa: E402


class _StatisticsSwap:
    """Forward pre-hooks on every instance-norm layer: ``record`` each layer's input statistics, or
    ``replay`` them (the layer then normalises with the recorded mean and variance, not its input's)."""

    def __init__(self, model):
        self.layers = [m for m in model.modules() if isinstance(m, torch.nn.InstanceNorm3d)]
        self.recorded, self.mode = {}, "off"
        self.hooks = [m.register_forward_hook(self._hook) for m in self.layers]

    def _hook(self, module, inputs, output):
        x = inputs[0]
        mean, var = x.mean(dim=(2, 3, 4), keepdim=True), x.var(dim=(2, 3, 4), keepdim=True, unbiased=False)
        if self.mode == "record":
            self.recorded[id(module)] = (mean, var)
        elif self.mode == "replay":
            ref_mean, ref_var = self.recorded[id(module)]
            normalised = (x - ref_mean) / torch.sqrt(ref_var + module.eps)
            return normalised * module.weight.view(1, -1, 1, 1, 1) + module.bias.view(1, -1, 1, 1, 1)
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", required=True, help="labelled case folder, tumour in one hemisphere")
    parser.add_argument("--model", default="vnet-brats-v1", help="a network with per-study normalisation")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, _ = load_network(args.model)
    swap = _StatisticsSwap(model)
    if not swap.layers or any(m.track_running_stats for m in swap.layers):
        sys.exit(f"{args.model} does not normalise by per-study statistics; nothing to diagnose.")
    cpu = torch.device("cpu")
    tumour = prepare(load_study(args.case).images)
    with tempfile.TemporaryDirectory() as tmp:
        free = prepare(load_study(write_mirrored_case(args.case, tmp)).images)
    swap.mode = "record"
    labels, _ = segment_prepared(model, tumour, cpu)
    print(f"tumour-bearing scan: WT {(labels > 0).sum() / 1000:.2f} cm3")
    swap.mode = "off"
    labels, _ = segment_prepared(model, free, cpu)
    print(f"tumour-free twin, its own statistics: WT {(labels > 0).sum() / 1000:.2f} cm3")
    swap.mode = "replay"  # statistics are per channel, so the crops need not be the same size
    labels, _ = segment_prepared(model, free, cpu)
    print(f"tumour-free twin, the tumour-bearing scan's statistics: WT {(labels > 0).sum() / 1000:.2f} cm3")


if __name__ == "__main__":
    main()
