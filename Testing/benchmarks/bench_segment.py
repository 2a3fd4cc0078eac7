"""Benchmark: end-to-end ``segment`` on a real 240x240x155 case against one SegResNet forward pass.

Not a test: run it by hand (it needs GLIOMASUITE_DATA and the shipped model).

    GLIOMASUITE_DATA=../shared/data .venv/bin/python Testing/benchmarks/bench_segment.py [--threads 2] [--model M]

First, what a user waits: ``gliomasuite segment CASE -o seg.nii.gz`` as its own process, timed from
process start to the file written (imports, model load, ONNX Runtime session, everything), with an
empty ONNX graph cache (the first run on a machine) and then with the cache filled, best of
``--repeat`` each, and the children's peak resident memory. Then, in this one process with the same
thread count: (1) our whole ``segment`` path
(load the study, preprocess, V-Net, post-process, map back onto the input grid), best of
``--repeat`` runs; (2) one forward pass of MONAI's SegResNet(init_filters=32,
blocks_down=(1, 2, 2, 4)) — the backbone SlicerMONAIAuto3DSeg uses — on the same prepared brain
crop, padded to a multiple of 8. Peak resident memory of each phase is sampled from /proc.
Prints both times, their ratio and the peaks; writes JSON with --out.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "GliomaSuite"))


class PeakRSS:
    """Peak resident set size of this process while the block runs (sampled every 5 ms)."""

    def __enter__(self):
        self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def real_case_and_model(case_name: str, threads: int, model_name=None, single_network: bool = False):
    """The real case's folder under $GLIOMASUITE_DATA/brats and the model (default: the shipped
    default; ``single_network`` refuses an ensemble), with PyTorch on ``threads`` threads (what both
    benchmarks start from)."""
    import torch

    from gliomasuite.segmentation.inference import load_model, load_network

    torch.set_num_threads(threads)
    data = os.environ.get("GLIOMASUITE_DATA")
    if not data:
        sys.exit("Set GLIOMASUITE_DATA to the shared data folder (it holds the real case).")
    return Path(data) / "brats" / case_name, (load_network if single_network else load_model)(model_name)[0]


def whole_process(case: Path, threads: int, repeat: int, model=None, tta=False) -> dict:
    """Wall time of ``gliomasuite segment`` as a user runs it, cold ONNX cache first, then warm."""
    root = Path(__file__).resolve().parents[2]
    times = {"cold_cache": [], "warm_cache": []}
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=str(root / "GliomaSuite"), OMP_NUM_THREADS=str(threads),
                   ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=str(threads))
        command = [sys.executable, "-m", "gliomasuite", "segment", str(case), "-o", f"{tmp}/seg.nii.gz",
                   "--overwrite"] + (["--model", model] if model else []) + (["--tta"] if tta else [])
        for kind in times:
            for i in range(repeat):
                # A new, empty cache folder for every cold run; one shared folder for the warm runs.
                env["GLIOMASUITE_CACHE"] = f"{tmp}/cache-{i}" if kind == "cold_cache" else f"{tmp}/cache-0"
                start = time.perf_counter()
                subprocess.run(command, env=env, check=True, capture_output=True)
                times[kind].append(round(time.perf_counter() - start, 2))
    return {f"process_{k}_s_best": min(v) for k, v in times.items()} | {
        f"process_{k}_s_all": v for k, v in times.items()} | {
        "process_peak_rss_gb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9, 2)}


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", default="BraTS2021_00006")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--model", help="registered model or weights file (default: the shipped default)")
    parser.add_argument("--out")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from monai.networks.nets import SegResNet

    from gliomasuite.preprocess import prepare
    from gliomasuite.segmentation.inference import segment_study
    from gliomasuite.study import load_study

    case, model = real_case_and_model(args.case, args.threads, args.model)
    process = whole_process(case, args.threads, args.repeat, args.model, args.tta)

    ours = []
    with PeakRSS() as ours_mem:
        for _ in range(args.repeat):
            start = time.perf_counter()
            result = segment_study(load_study(case), model=model, device="cpu", tta=args.tta)
            ours.append(time.perf_counter() - start)
    size = result.labels.GetSize()

    crop = prepare(load_study(case).images).array
    pad = [(0, 0)] + [(0, (-s) % 8) for s in crop.shape[1:]]
    x = torch.from_numpy(np.pad(crop, pad))[None]
    reference = SegResNet(spatial_dims=3, init_filters=32, in_channels=4, out_channels=3,
                          blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1)).eval()
    with PeakRSS() as ref_mem, torch.inference_mode():
        start = time.perf_counter()
        reference(x)
        segresnet = time.perf_counter() - start

    report = {"case": args.case, "model": model.name, "image_size": list(size), "threads": args.threads, "tta": args.tta,
              **process, "ratio_process_warm_over_segresnet": round(process["process_warm_cache_s_best"] / segresnet, 3),
              "segment_s_best": round(min(ours), 2), "segment_s_all": [round(t, 2) for t in ours],
              "segresnet_forward_s": round(segresnet, 2), "crop_shape": list(x.shape[2:]),
              "ratio_segment_over_segresnet": round(min(ours) / segresnet, 3),
              "segment_peak_rss_gb": round(ours_mem.peak / 1e9, 2),
              "segresnet_peak_rss_gb": round(ref_mem.peak / 1e9, 2)}
    for key, value in report.items():
        print(f"{key:32s} {value}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
