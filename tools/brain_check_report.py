"""What the brain check measures on each study of a cohort, before anything is segmented.

For every study folder given (or every sub-folder of ``--data``), prints the foreground volume, the
fraction of its box it fills, the highest correlation between two of its sequences inside the
brain, the largest offset and smallest overlap of a sequence's brain outline against the T1ce's
(``gliomasuite/alignment.py``: misregistration), the fewest distinct values inside a sequence (a label
map has a handful), the two sequence-order scores (swapped sequences; positive as they should be), and
the checks' verdict, then the range of each number over the cohort: how far a site's data sit from the
thresholds. ``--swaps`` also swaps every two of each study's four sequences in turn (six swaps) and
counts how many of each kind the checks catch.

It also prints a candidate check that GliomaSuite does not use: the enhancement asymmetry, how much further
the upper tail of log(T1ce/T1) inside the brain reaches than its lower tail (99.5th and 0.5th percentiles
around the median, each image divided by its median first). Enhancement should make it positive, and a
T1/T1ce swap flips its sign exactly; on the real cases it is not positive in every correct study (a
tumour without enhancement among them), so a T1/T1ce swap is not checked (see README, Brain check).

    python tools/brain_check_report.py --data $GLIOMASUITE_DATA/brats ~/gliomasuite-extra --swaps \
        $GLIOMASUITE_DATA/brats-unlabelled/*
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "GliomaSuite"))

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from gliomasuite.alignment import (misregistration_warnings, not_mr_images, outline_offsets,  # noqa: E402
                                   sequence_order_scores, swapped_sequences)
from gliomasuite.brain_check import box_fill, input_problems  # noqa: E402
from gliomasuite.modalities import MODALITIES  # noqa: E402
from gliomasuite.preprocess import prepare  # noqa: E402
from gliomasuite.segmentation.inference import with_absent_as_zeros  # noqa: E402
from gliomasuite.study import load_study  # noqa: E402


def enhancement_asymmetry(t1: sitk.Image, t1ce: sitk.Image) -> float:
    """(q99.5 - q50) - (q50 - q0.5) of log(T1ce / T1) over voxels where both are positive (see the docstring)."""
    a = sitk.GetArrayViewFromImage(t1).astype(np.float64)
    b = sitk.GetArrayViewFromImage(t1ce).astype(np.float64)
    inside = (a > 0) & (b > 0)
    a, b = a[inside] / np.median(a[inside]), b[inside] / np.median(b[inside])
    low, mid, high = np.percentile(np.log(b / a), [0.5, 50, 99.5])
    return float((high - mid) - (mid - low))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="*", help="study folders")
    parser.add_argument("--data", nargs="+", default=[], help="folders whose sub-folders are studies")
    parser.add_argument("--swaps", action="store_true", help="also try every swap of two sequences per study")
    parser.add_argument("--other-patient", nargs="+", metavar="CASE_FOLDER",
                        help="instead: pair every case's T1 and T1ce with every other case's T2 and FLAIR (BraTS "
                             "2021 names) and print how far their brain outlines sit from the T1ce's, and whether "
                             "the misregistration warning names them")
    args = parser.parse_args(argv)
    if args.other_patient:
        return other_patient_pairs([Path(p) for p in args.other_patient])
    folders = [Path(s) for s in args.studies]
    for data in args.data:
        folders += sorted(p for p in Path(data).iterdir() if p.is_dir())
    if not folders:
        parser.error("give study folders or --data")
    volumes, fills, correlations, alignment, refused, misaligned = [], [], [], [], 0, 0
    orders, swaps, asymmetries = [], {}, []
    for folder in folders:
        study = load_study(folder, required=("t1ce", "flair"))
        present = [m for m in MODALITIES if m in study.images]
        prepared = prepare(with_absent_as_zeros(study.images, [m for m in MODALITIES if m not in present]))
        channels = [MODALITIES.index(m) for m in present]
        inside = prepared.array[channels][:, prepared.brain]
        correlation = np.corrcoef(inside)[np.triu_indices(len(channels), 1)].max()
        swap_problems, swap_warnings = swapped_sequences(study.images)
        problems = not_mr_images(study.images) + input_problems(prepared, present) + swap_problems
        warned = misregistration_warnings(study.images) + swap_warnings
        order = sequence_order_scores(study.images) if len(present) == 4 else None
        asymmetry = enhancement_asymmetry(study.images["t1"], study.images["t1ce"]) if "t1" in present else None
        if asymmetry is not None:
            asymmetries.append(asymmetry)
        if order:
            orders.append(order)
        if args.swaps and order:
            import itertools

            for a, b in itertools.combinations(MODALITIES, 2):
                swapped = dict(study.images, **{a: study.images[b], b: study.images[a]})
                caught = swapped_sequences(swapped)
                kind = f"{a}<->{b}"
                swaps.setdefault(kind, [0, 0, 0])
                swaps[kind][0] += 1
                swaps[kind][1] += bool(caught[0])
                swaps[kind][2] += bool(caught[1])
        offsets = outline_offsets(study.images).values()
        offset, dice = max(o for o, _ in offsets), min(d for _, d in offsets)
        distinct = min(len(np.unique(sitk.GetArrayViewFromImage(im)[::4, ::4, ::4])) for im in study.images.values())
        volumes.append(prepared.brain.sum() / 1000.0)
        fills.append(box_fill(prepared.brain))
        correlations.append(correlation)
        alignment.append((offset, dice, distinct))
        refused += bool(problems)
        misaligned += bool(warned)
        print(f"{folder.name:26s} {volumes[-1]:6.0f} cm3  fill {fills[-1]:.2f}  max correlation {correlation:+.2f}  "
              f"outline offset {offset:.2f} mm, Dice {dice:.3f}  fewest values {distinct}  "
              + (f"order pairing {order['pairing']:+.2f} flair-vs-t2 {order['flair_vs_t2']:+.2f}  " if order else "")
              + (f"enhancement asymmetry {asymmetry:+.2f}  " if asymmetry is not None else "") + f"{'REFUSED: ' + '; '.join(problems) if problems else 'passes'}"
              f"{'; WARNED: ' + '; '.join(warned) if warned else ''}", flush=True)
    print(f"\n{len(folders)} studies, {refused} refused, {misaligned} warned misregistered; foreground "
          f"{min(volumes):.0f}-{max(volumes):.0f} cm3, fill {min(fills):.2f}-{max(fills):.2f}, highest correlation "
          f"between two sequences {max(correlations):.2f}; outline offset up to {max(a[0] for a in alignment):.2f} mm, "
          f"Dice down to {min(a[1] for a in alignment):.3f}; fewest distinct values {min(a[2] for a in alignment)}"
          + (f"; sequence order: pairing down to {min(o['pairing'] for o in orders):+.2f}, flair-vs-t2 down to "
             f"{min(o['flair_vs_t2'] for o in orders):+.2f} (below 0: refused / warned)" if orders else ""))
    if asymmetries:
        print(f"enhancement asymmetry (not a check): {min(asymmetries):+.2f} to {max(asymmetries):+.2f}, "
              f"not positive in {sum(a <= 0 for a in asymmetries)} of {len(asymmetries)} studies as given")
    for kind, (tried, refused_swaps, warned_swaps) in swaps.items():
        print(f"swap {kind:12s}: {refused_swaps} of {tried} refused, {warned_swaps} warned")
    return 0


def other_patient_pairs(cases) -> int:
    import itertools

    overlaps, named = [], 0
    for a, b in itertools.permutations(cases, 2):
        files = {m: (a if m in ("t1", "t1ce") else b) / f"{(a if m in ('t1', 't1ce') else b).name}_{m}.nii.gz"
                 for m in MODALITIES}
        images = load_study(files).images
        offsets = {m: v for m, v in outline_offsets(images).items() if m in ("t2", "flair")}
        warned = misregistration_warnings(images)
        overlaps += [d for _, d in offsets.values()]
        named += bool(warned)
        print(f"T1/T1ce {a.name:24s} T2/FLAIR {b.name:24s} "
              + "  ".join(f"{m} {o:.1f} mm Dice {d:.3f}" for m, (o, d) in offsets.items())
              + f"  {'named' if warned else 'NOT named'}", flush=True)
    print(f"\n{named} of {len(cases) * (len(cases) - 1)} pairings named; outline Dice of the other patient's "
          f"T2/FLAIR {min(overlaps):.2f}-{max(overlaps):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
