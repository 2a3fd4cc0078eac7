"""Score a segmentation model on labelled BraTS-style cases, end to end.

Each case goes through exactly what a user runs (load_study -> segment_study), and the label map
on the study's own grid is compared with the expert one (Dice, HD95 per region, BraTS conventions
for empty regions; see gliomasuite.metrics). Prints a table and writes per-case and summary JSON.

    python tools/evaluate_segmentation.py --data $GLIOMASUITE_DATA/brats --cases A B C \
        --model vnet-brats-v1 --out results.json [--tta] [--threads 2] [--without t1 t2] \
        [--healthy-demo-seeds 0 1 2] [--mirrored-healthy Brats18_CBICA_AME_1 Brats18_CBICA_AOZ_1]

``--without`` drops modalities after loading, from every study here (as if it lacked them; the model must have been
trained to cope). ``--healthy-demo-seeds`` also segments tumour-free demo brains
(``make_demo_study(tumour=False)``) and reports the tumour volume found in each (should be ~0).
``--mirrored-healthy`` does the same for real tumour-free brains made from the named cases of
``--data`` by mirroring their tumour-free hemisphere (:mod:`gliomasuite.segmentation.negatives`).
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "GliomaSuite"))

import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402

from gliomasuite.metrics import evaluate_labels, summarize  # noqa: E402
from gliomasuite.segmentation.inference import load_model, segment_study  # noqa: E402
from gliomasuite.study import find_segmentation, load_study  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--cases", nargs="+", required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--out")
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--without", nargs="*", default=[], choices=["t1", "t2"])
    parser.add_argument("--healthy-demo-seeds", nargs="*", type=int, default=[])
    parser.add_argument("--mirrored-healthy", nargs="*", default=[], metavar="CASE")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, meta = load_model(args.model)

    def segment(folder):
        """What a user with this study (less the --without modalities) gets."""
        study = load_study(folder)
        for modality in args.without:
            del study.images[modality]
        result = segment_study(study, model=model, device="cpu", tta=args.tta)
        if result.brain_check:  # an empty map scored as Dice 0 would blame the model for the check
            sys.exit(f"{folder}: not segmented, the brain check refused it: {'; '.join(result.brain_check)}")
        return result

    results, timings = {}, {}
    for name in args.cases:
        folder = Path(args.data) / name
        start = time.perf_counter()
        result = segment(folder)
        timings[name] = time.perf_counter() - start
        pred = sitk.GetArrayFromImage(result.labels)
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(find_segmentation(folder))))
        results[name] = evaluate_labels(pred, truth, spacing=result.labels.GetSpacing()[::-1])
        row = "  ".join(f"{r} {m['dice']:.3f}/{m['hd95']:6.1f}" for r, m in results[name].items())
        print(f"{name:24s} {row}  ({timings[name]:.1f} s)", flush=True)
    summary = summarize(results)
    print("mean Dice: " + ", ".join(f"{r} {summary[r]['dice']['mean']:.3f}" for r in summary))
    print("median HD95 (mm): " + ", ".join(f"{r} {summary[r]['hd95']['median']:.1f}" for r in summary))
    # Tumour-free brains: the tumour volume found in each should be ~0.
    from gliomasuite.demo import make_demo_study
    from gliomasuite.segmentation.negatives import write_mirrored_case

    tumour_free = [(f"healthy_demo_{seed}", f"tumour-free demo brain, seed {seed}",
                    lambda tmp, seed=seed: make_demo_study(tmp, seed=seed, tumour=False))
                   for seed in args.healthy_demo_seeds]
    tumour_free += [(f"mirrored_{name}", f"tumour-free mirrored {name}",
                     lambda tmp, name=name: write_mirrored_case(Path(args.data) / name, tmp))
                    for name in args.mirrored_healthy]
    healthy = {}
    for key, label, make in tumour_free:
        with tempfile.TemporaryDirectory() as tmp:
            result = segment(make(tmp))
        healthy[key] = {"volumes_cm3": result.volumes_cm3, "warnings": result.warnings}
        print(f"{label}: WT {result.volumes_cm3['WT']:.2f} cm3 found", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"cases": results, "summary": summary, "seconds": timings,
                                              "tta": args.tta, "model": args.model, "without": args.without,
                                              "healthy_demo": healthy}, indent=1, default=float))


if __name__ == "__main__":
    main()
