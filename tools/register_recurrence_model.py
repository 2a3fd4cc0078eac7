"""Ship a trained recurrence network: copy RUN/recurrence.npz into gliomasuite/models under NAME and
register it (file, SHA-256, card, version) in models.json's "recurrence" section, which the follow-up
reads (gliomasuite.recurrence.inference). The card (NAME.md) is written by hand beside it.

    .venv/bin/python tools/register_recurrence_model.py RUN/recurrence.npz [--name recurrence-sim-v2] [--version 2.0.0]
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "GliomaSuite"))

from gliomasuite.recurrence.weights import load_recurrence_weights  # noqa: E402
from gliomasuite.registry import MODELS_DIR, REGISTRY  # noqa: E402
from gliomasuite.segmentation.weights import sha256  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights")
    parser.add_argument("--name", default="recurrence-sim-v2")
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--train-log", help="the run's train-log.jsonl, shipped beside the weights")
    args = parser.parse_args()
    _, meta = load_recurrence_weights(args.weights)  # refuses anything that is not our network file
    target = MODELS_DIR / f"{args.name}.npz"
    shutil.copyfile(args.weights, target)
    if args.train_log:
        shutil.copyfile(args.train_log, MODELS_DIR / f"{args.name}-train-log.jsonl")
    registry = json.loads(REGISTRY.read_text())
    registry.setdefault("recurrence", {})[args.name] = {
        "file": target.name, "sha256": sha256(target), "card": f"{args.name}.md", "version": args.version,
        "architecture": "RecurrenceNet", "inputs": ["t1", "t1ce", "t2", "flair", "tumour mask", "days since previous"],
        "required": ["t1ce"], "grid_mm": 2, "crop_voxels": 48, "threshold": 0.5,
        "trained_on": f"series simulated from {len(meta['train_cases'])} real BraTS baselines",
        "validation_baselines": meta["validation_cases"]}
    REGISTRY.write_text(json.dumps(registry, indent=1) + "\n")
    print(f"Registered {args.name}: {target} ({target.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
