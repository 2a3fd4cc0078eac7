"""How sure are the held-out Dice means? Bootstrap intervals from evaluate_segmentation.py's JSON.

With eight held-out cases one bad case moves a mean by a tenth, so a mean alone says little. This
reads the per-case results that ``tools/evaluate_segmentation.py --out`` wrote and prints, per
region, the mean Dice with a 95% percentile-bootstrap interval over cases (10,000 resamples of the
cases, seed 0). Given two files scored on the same cases it also prints the paired difference
(second minus first) with its interval: an interval that straddles 0 means the eight cases cannot
tell the two models apart.

    python tools/validation_intervals.py GliomaSuite/gliomasuite/models/vnet-brats-v2-validation.json \
        [GliomaSuite/gliomasuite/models/vnet-brats-reduced-v2-validation-all-four.json]

Only numpy; nothing is segmented again.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REGIONS = ("WT", "TC", "ET")


def case_dice(path: Path) -> dict:
    """{case: {region: dice}} from an evaluate_segmentation.py result file."""
    cases = json.loads(Path(path).read_text())["cases"]
    return {case: {r: float(scores[r]["dice"]) for r in REGIONS} for case, scores in cases.items()}


def bootstrap_mean(values: np.ndarray, resamples: int = 10000, seed: int = 0, level: float = 0.95):
    """Mean of ``values`` and its percentile-bootstrap interval over resampled cases."""
    rng = np.random.default_rng(seed)
    values = np.asarray(values, float)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    return float(values.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100.0 - tail))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="one or two evaluate_segmentation.py JSON files")
    parser.add_argument("--resamples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if len(args.results) > 2:
        parser.error("give one file, or two to compare")
    runs = [case_dice(p) for p in args.results]
    for path, run in zip(args.results, runs):
        print(f"{Path(path).name}: {len(run)} cases")
        for r in REGIONS:
            mean, low, high = bootstrap_mean([run[c][r] for c in run], args.resamples, args.seed)
            print(f"  {r}: mean Dice {mean:.3f}, 95% interval {low:.3f}-{high:.3f}")
    if len(runs) == 2:
        common = sorted(set(runs[0]) & set(runs[1]))
        if len(common) != len(runs[0]) or len(common) != len(runs[1]):
            print(f"(compared on the {len(common)} cases both files scored)")
        print(f"paired difference, {Path(args.results[1]).name} minus {Path(args.results[0]).name}:")
        for r in REGIONS:
            diff = np.array([runs[1][c][r] - runs[0][c][r] for c in common])
            mean, low, high = bootstrap_mean(diff, args.resamples, args.seed)
            print(f"  {r}: {mean:+.3f}, 95% interval {low:+.3f} to {high:+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
