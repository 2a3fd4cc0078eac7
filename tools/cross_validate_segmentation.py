"""Cross-validation of the segmentation recipe over every labelled case no shipped network has seen.

Which cases, and why this design (issue 15):
- ``BASE``: the 17 cases of ``$GLIOMASUITE_DATA/brats`` that the shipped networks (vnet-brats-v1/v2,
  reduced-v1/v2) were trained on. They are in every fold's training set and are never validated on:
  every fold fine-tunes from ``vnet-brats-reduced-v2``, which has seen them, so validating on them
  would score a model on its own training data.
- ``CV``: the 25 labelled cases none of those networks trained on: the 8 held-out cases of
  ``$GLIOMASUITE_DATA/brats`` and the 17 cases of ``$GLIOMASUITE_EXTRA`` (``../shared/data/extra-training``
  says how to fetch them). They are split into ``--folds`` case-level folds, stratified by
  institution group (BraTS 2021, CBICA, TCIA, 2013); each case is validated exactly once, by the one
  fold model that never saw it.
- Also in training: the synthetic demo-style studies and tumour-free brains of the base cache
  (``tools/build_training_cache.py``), and mirrored tumour-free hemispheres (``negatives.py``) of the
  base cases and of the fold's own training cases (never of its validation cases).

Steps (each resumable; ``OUT`` defaults to ``.trainpack/cv``; 4 folds unless ``--folds``)::

    GLIOMASUITE_DATA=../shared/data GLIOMASUITE_EXTRA=~/gliomasuite-extra \\
        .venv/bin/python tools/cross_validate_segmentation.py prepare
    .venv/bin/python tools/cross_validate_segmentation.py train --fold 0   # ... --fold 3 (two at once on 2 cores)
    .venv/bin/python tools/cross_validate_segmentation.py evaluate --threads 2 \
        --out-json GliomaSuite/gliomasuite/models/vnet-brats-cv4-v1-crossvalidation.json
    .venv/bin/python tools/cross_validate_segmentation.py register      # ship the fold models and their ensemble

The longer-training lever, a second round of the recipe from each fold's own model (300 steps, peak lr
2.5e-4), then the same evaluation and a paired comparison per case::

    .venv/bin/python tools/cross_validate_segmentation.py train --out .trainpack/cv-long --fold 0 \
        --continue-from .trainpack/cv --lr 2.5e-4 --iterations 300          # ... --fold 3
    .venv/bin/python tools/cross_validate_segmentation.py evaluate --out .trainpack/cv-long --threads 2 \
        --reference vnet-brats-ensemble-v1 --out-json docs/benchmarks/cv-longer-training.json
    .venv/bin/python tools/cross_validate_segmentation.py compare \
        --before GliomaSuite/gliomasuite/models/vnet-brats-cv4-v1-crossvalidation.json \
        --out-json docs/benchmarks/cv-longer-training.json

The lesion-mixing lever (CarveMix, ``gliomasuite/segmentation/carvemix.py``): the same second round with
half of the samples mixed, compared with the longer-training run (same start, steps and learning rate)
and with the shipped fold models::

    .venv/bin/python tools/cross_validate_segmentation.py train --out .trainpack/cv-carvemix --fold 0 \
        --continue-from .trainpack/cv --lr 2.5e-4 --iterations 300 --carvemix 0.5   # ... --fold 3
    .venv/bin/python tools/cross_validate_segmentation.py evaluate --out .trainpack/cv-carvemix --threads 2 \
        --reference vnet-brats-ensemble-v1 --out-json docs/benchmarks/cv-carvemix.json
    .venv/bin/python tools/cross_validate_segmentation.py compare --before docs/benchmarks/cv-longer-training.json \
        --out-json docs/benchmarks/cv-carvemix.json

The non-enhancing-core lever (three times as many patches centred on necrotic / non-enhancing core) and the
semi-supervision lever (the unlabelled real case, labelled by each fold's own model, added to that fold's
training), each the same second round, compared with the longer-training run (same start, steps, lr)::

    .venv/bin/python tools/cross_validate_segmentation.py train --out .trainpack/cv-core --fold 0 \
        --continue-from .trainpack/cv --lr 2.5e-4 --iterations 300 --class-ratios 1 3 1 2   # ... --fold 3
    .venv/bin/python tools/cross_validate_segmentation.py pseudo-labels --out .trainpack/cv-semi \
        --continue-from .trainpack/cv
    .venv/bin/python tools/cross_validate_segmentation.py train --out .trainpack/cv-semi --fold 0 \
        --continue-from .trainpack/cv --lr 2.5e-4 --iterations 300                          # ... --fold 3
    .venv/bin/python tools/cross_validate_segmentation.py evaluate --out .trainpack/cv-core --threads 2 \
        --reference vnet-brats-ensemble-v1 --out-json docs/benchmarks/cv-core-sampling.json   # cv-semi likewise
    .venv/bin/python tools/cross_validate_segmentation.py compare --before docs/benchmarks/cv-longer-training.json \
        --out-json docs/benchmarks/cv-core-sampling.json

The 1 mm refinement lever (``gliomasuite/segmentation/refine.py``): each fold's 2 mm model gives coarse
probabilities; a refiner per fold learns to redraw them at 1 mm from the fold's training cases, whose
coarse inputs are out-of-fold where they can be (a CV case's from the fold model that never saw it; the
base cases, in every fold's training, from the fold's own model); then each validation case is scored
end to end with and without its fold's refiner::

    .venv/bin/python tools/cross_validate_segmentation.py ceiling      # what 2 mm costs a perfect answer
    .venv/bin/python tools/cross_validate_segmentation.py coarse --out .trainpack/cv-refine --threads 2
    .venv/bin/python tools/cross_validate_segmentation.py train-refiner --out .trainpack/cv-refine --fold 0
    .venv/bin/python tools/cross_validate_segmentation.py evaluate-refiner --out .trainpack/cv-refine \
        --threads 2 --out-json docs/benchmarks/cv-refine.json

``evaluate`` segments each validation case end to end (``load_study`` -> ``segment_study``) with its
fold's model, and with the current default on the same cases side by side, and writes per-case
Dice / HD95 (BraTS conventions), bootstrap intervals, per-group means and the worst cases.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "GliomaSuite"))

BASE = ["BraTS2021_01476", "BraTS2021_01479", "BraTS2021_01480", "BraTS2021_01482", "BraTS2021_01484",
        "BraTS2021_01485", "Brats18_2013_11_1", "Brats18_2013_23_1", "Brats18_CBICA_ABM_1", "Brats18_CBICA_AMH_1",
        "Brats18_CBICA_APR_1", "Brats18_CBICA_APY_1", "Brats18_TCIA01_425_1", "Brats18_TCIA02_135_1",
        "Brats18_TCIA02_606_1", "Brats18_TCIA03_265_1", "Brats18_TCIA13_623_1"]
HELD_OUT = ["BraTS2021_00006", "BraTS2021_01477", "BraTS2021_01481", "Brats18_2013_3_1", "Brats18_CBICA_AOZ_1",
            "Brats18_TCIA01_201_1", "Brats18_TCIA10_628_1", "Brats18_CBICA_AME_1"]
EXTRA = ["Brats18_CBICA_AQO_1", "Brats18_CBICA_AQP_1", "Brats18_CBICA_AQQ_1", "Brats18_CBICA_AQR_1",
         "Brats18_CBICA_AQT_1", "Brats18_CBICA_ARW_1", "Brats18_CBICA_ASA_1", "Brats18_CBICA_ASE_1",
         "Brats18_CBICA_ASG_1", "Brats18_CBICA_ASV_1", "Brats18_CBICA_ASW_1", "Brats18_CBICA_ASY_1",
         "Brats18_CBICA_ATB_1", "Brats18_CBICA_ATD_1", "Brats18_CBICA_AVG_1", "Brats18_TCIA10_639_1",
         "Brats18_2013_20_1"]
CV = HELD_OUT + EXTRA
INIT = "vnet-brats-reduced-v2"
#: The fine-tuning recipe run on every fold (the same for the shipped models).
RECIPE = ["--iterations", "600", "--lr", "5e-4", "--norm", "cohort", "--modality-dropout", "0.3",
          "--checkpoint-every", "100", "--log-every", "25"]


def group(case: str) -> str:
    """Institution group for stratification (grade is not recorded with these cases)."""
    if case.startswith("BraTS2021"):
        return "BraTS2021"
    for key in ("CBICA", "TCIA", "2013"):
        if f"_{key}" in case:
            return key
    return "other"


def folds(k: int, seed: int = 0):
    """``k`` case-level folds of CV, stratified by :func:`group`: each group's cases, shuffled with
    ``seed``, are dealt round-robin, continuing from where the previous group stopped."""
    out = [[] for _ in range(k)]
    position = 0
    for name in sorted({group(c) for c in CV}):
        members = sorted(c for c in CV if group(c) == name)
        random.Random(f"{seed}-{name}").shuffle(members)
        for case in members:
            out[position % k].append(case)
            position += 1
    return [sorted(f) for f in out]


def data_dirs():
    data = Path(os.environ.get("GLIOMASUITE_DATA", ROOT.parent / "shared" / "data")) / "brats"
    extra = Path(os.path.expanduser(os.environ.get("GLIOMASUITE_EXTRA", "~/gliomasuite-extra")))
    missing = [c for c in EXTRA if not (extra / c).is_dir()]
    if missing:
        sys.exit(f"{extra} lacks {len(missing)} of the 17 extra cases (e.g. {missing[0]}); fetch them as "
                 "../shared/data/extra-training/README.md says and set GLIOMASUITE_EXTRA")
    return data, extra


def case_folder(case: str) -> Path:
    data, extra = data_dirs()
    return extra / case if case in EXTRA else data / case


def prepare(out: Path) -> None:
    from gliomasuite.errors import GliomaSuiteError
    from gliomasuite.segmentation.cache import build_cache
    from gliomasuite.segmentation.negatives import write_mirrored_case

    cache = out / "cache"
    base = out / "base-cache"
    subprocess.run([sys.executable, str(ROOT / "tools" / "build_training_cache.py"), str(base)], check=True)
    data, extra = data_dirs()
    build_cache(data, cache, cases=HELD_OUT)
    build_cache(extra, cache, cases=EXTRA)
    with tempfile.TemporaryDirectory() as tmp:
        for case in CV:
            try:
                write_mirrored_case(case_folder(case), tmp)
            except GliomaSuiteError as reason:
                print(f"not mirrored: {reason}")
        build_cache(tmp, cache)
    # One cache folder for training: link the base cache's files beside the CV cases.
    manifest = json.loads((cache / "cache.json").read_text())
    base_manifest = json.loads((base / "cache.json").read_text())
    for name, entry in base_manifest["cases"].items():
        for key in ("image", "label"):
            link = cache / entry[key]
            if not link.exists():
                link.symlink_to((base / entry[key]).resolve())
        manifest["cases"][name] = entry
    (cache / "cache.json").write_text(json.dumps(manifest, indent=1))
    print(f"{len(manifest['cases'])} cases in {cache}")


def training_cases(out: Path, fold: int, k: int):
    manifest = json.loads((out / "cache" / "cache.json").read_text())
    held = set(folds(k)[fold])
    names = []
    for name in manifest["cases"]:
        source = name[len("Mirrored_"):] if name.startswith("Mirrored_") else name
        if source in held:
            continue
        if source in CV or source in BASE or name.startswith(("Synthetic_", "Healthy_")):
            names.append(name)
        elif name.startswith("Pseudo_") and name.endswith(f"_f{fold}"):  # this fold's own pseudo-labelled case
            names.append(name)
    return sorted(names)


def pseudo_labels(out: Path, k: int, threads: int, continue_from: Path) -> None:
    """The semi-supervision lever: ``out/cache`` becomes ``continue_from``'s cache (linked) plus, for each fold,
    the unlabelled real case of ``$GLIOMASUITE_DATA/brats-unlabelled`` labelled by that fold's own model
    (``Pseudo_<case>_f<fold>``; a fold model never saw its validation cases, so neither does its label)."""
    import shutil

    import SimpleITK as sitk
    import torch

    from gliomasuite.segmentation.cache import build_cache
    from gliomasuite.segmentation.inference import load_model, segment_study
    from gliomasuite.study import load_study

    torch.set_num_threads(threads)
    source_cache = Path(continue_from) / "cache"
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((source_cache / "cache.json").read_text())
    for entry in manifest["cases"].values():
        for key in ("image", "label"):
            link = cache / entry[key]
            if not link.exists():
                link.symlink_to((source_cache / entry[key]).resolve())
    if not (cache / "cache.json").exists():
        (cache / "cache.json").write_text(json.dumps(manifest, indent=1))
    unlabelled = Path(os.environ.get("GLIOMASUITE_DATA", ROOT.parent / "shared" / "data")) / "brats-unlabelled"
    cases = sorted(p for p in unlabelled.iterdir() if p.is_dir())
    with tempfile.TemporaryDirectory() as tmp:
        for fold in range(k):
            model, _ = load_model(str(Path(continue_from) / f"fold{fold}" / "vnet.npz"))
            for case in cases:
                name = f"Pseudo_{case.name}_f{fold}"
                study = load_study(case)
                result = segment_study(study, model, device="cpu")
                folder = Path(tmp) / name
                folder.mkdir()
                for modality, path in study.paths.items():
                    shutil.copyfile(path, folder / f"{name}_{modality}.nii.gz")
                sitk.WriteImage(result.labels, str(folder / f"{name}_seg.nii.gz"))
                print(f"fold {fold}: {case.name} pseudo-labelled, " + ", ".join(
                    f"{r} {v:.1f} cm3" for r, v in result.volumes_cm3.items()), flush=True)
        build_cache(tmp, cache)


def train(out: Path, fold: int, k: int, threads: int, max_minutes: float, continue_from: Path = None,
          lr: float = None, iterations: int = None, carvemix: float = None, class_ratios=None) -> None:
    """Train fold ``fold`` with the recipe. ``continue_from``: the longer-training lever, a second round of the
    recipe that starts from that run's model of the same fold (which never saw this fold's validation
    cases either) instead of ``INIT``, with ``lr`` as its peak learning rate and ``iterations`` steps; the
    caches are that run's. ``carvemix``: the lesion-mixing lever, that share of samples drawn with another
    training case's tumour pasted in. ``class_ratios``: the non-enhancing-core lever, patch centres drawn in
    these proportions (background, necrotic/non-enhancing core, edema, enhancing tumour)."""
    from gliomasuite.registry import MODELS_DIR

    run = out / f"fold{fold}"
    run.mkdir(parents=True, exist_ok=True)
    recipe = list(RECIPE)
    init = MODELS_DIR / f"{INIT}.npz"
    seed = fold
    if continue_from is not None:
        for name in ("cache", "base-cache"):  # (a cache of its own, e.g. made by pseudo_labels, is kept)
            if not (out / name).exists():
                (out / name).symlink_to(Path(continue_from).resolve() / name)
        init = Path(continue_from) / f"fold{fold}" / "vnet.npz"
        seed = 100 + fold
    if lr is not None:
        recipe[recipe.index("--lr") + 1] = str(lr)
    if iterations is not None:
        recipe[recipe.index("--iterations") + 1] = str(iterations)
    if carvemix:
        recipe += ["--carvemix", str(carvemix)]
    if class_ratios:
        recipe += ["--class-ratios", *map(str, class_ratios)]
    _run_training(out, run, fold, k, training_cases(out, fold, k), recipe, seed, threads, max_minutes,
                  ["--init-weights", str(init), "--export", str(run / "vnet.npz")], init=str(init))


def _run_training(out: Path, run: Path, fold: int, k: int, cases, recipe, seed: int, threads: int, max_minutes,
                  options, **split) -> None:
    """Write the fold's ``split.json`` and run ``gliomasuite.segmentation.training`` on ``out``'s cache (resumed
    when ``run`` holds a checkpoint)."""
    (run / "split.json").write_text(json.dumps({"fold": fold, "folds": k, "validation": folds(k)[fold],
                                                "training": cases, **split, "recipe": recipe, "seed": seed}, indent=1))
    command = [sys.executable, "-m", "gliomasuite.segmentation.training", "--cache", str(out / "cache"),
               "--out", str(run), "--cases", *cases, *recipe, "--seed", str(seed), "--threads", str(threads),
               *options]
    if max_minutes:
        command += ["--max-minutes", str(max_minutes)]
    if (run / "checkpoint.pt").exists():
        command.append("--resume")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "GliomaSuite"), OMP_NUM_THREADS=str(threads))
    subprocess.run(command, check=True, env=env)


#: The refiner's recipe (a 4-level V-Net at 1 mm on 64 mm patches, correcting the coarse logits).
REFINER_RECIPE = ["--downsample", "1", "--patch", "64", "64", "64", "--channels", "8", "16", "32", "64",
                  "--decoder-convs", "1", "1", "1", "--iterations", "400", "--lr", "1e-3", "--modality-dropout", "0.1",
                  "--checkpoint-every", "50", "--log-every", "25"]


def ceiling(cache: Path) -> dict:
    """Mean and lowest Dice of each CV case's own expert label map pooled to 2 mm (region fractions), then
    interpolated back to 1 mm as the networks' output is and thresholded at 0.5: what 2 mm voxels cost a
    perfect answer."""
    import numpy as np
    import torch

    from gliomasuite.segmentation.cache import load_case
    from gliomasuite.segmentation.training import downsample_case, labels_to_regions

    scores = []
    for case in CV:
        _, labels = load_case(cache, case)
        classes = torch.from_numpy(np.select([labels == 1, labels == 2, labels == 4], [1, 2, 3], 0).astype(np.uint8))[None]
        truth = labels_to_regions(classes) > 0
        _, _, coarse = downsample_case(torch.zeros((1,) + labels.shape), classes, 2)
        up = torch.nn.functional.interpolate(coarse[None], scale_factor=2, mode="trilinear", align_corners=False)[0]
        up = up[:, : labels.shape[0], : labels.shape[1], : labels.shape[2]] > 0.5
        scores.append([float(2 * (up[r] & truth[r]).sum() / (up[r].sum() + truth[r].sum())) if truth[r].any()
                       else float("nan") for r in range(3)])
    scores = np.array(scores)
    return {r: {"dice_mean": float(np.nanmean(scores[:, i])), "dice_min": float(np.nanmin(scores[:, i]))}
            for i, r in enumerate(("WT", "TC", "ET"))}


def coarse_predictions(out: Path, k: int, threads: int, cv_run: Path) -> None:
    """Each fold model's coarse probabilities (no flips) on the cached crops that its fold's refiner trains on
    or that fill in for other folds: its own validation cases (out-of-fold, ``coarse/oof``) and every base
    case (``coarse/fold<j>``); then each fold's folder of links, ``fold<k>/coarse``."""
    import numpy as np
    import torch

    from gliomasuite.segmentation.cache import load_case, save_array
    from gliomasuite.segmentation.inference import load_model, network_for, predict_probabilities

    torch.set_num_threads(threads)
    device = torch.device("cpu")
    cache = cv_run / "cache"
    if not (out / "cache").exists():
        out.mkdir(parents=True, exist_ok=True)
        (out / "cache").symlink_to(cache.resolve())

    for j, held in enumerate(folds(k)):
        model, _ = load_model(str(cv_run / f"fold{j}" / "vnet.npz"))
        net, _, _ = network_for(model, device)
        for source, cases in (("oof", held), (f"fold{j}", BASE)):
            folder = out / "coarse" / source
            folder.mkdir(parents=True, exist_ok=True)
            for case in cases:
                path = folder / f"{case}_coarse.npy.xz"
                if not path.exists():
                    image, _ = load_case(cache, case)
                    save_array(path, np.round(predict_probabilities(net, image, device) * 255).astype(np.uint8))
                    print(f"fold {j} {source} {case}", flush=True)
    for fold in range(k):
        links = out / f"fold{fold}" / "coarse"
        links.mkdir(parents=True, exist_ok=True)
        for case in refiner_cases(fold, k):
            link = links / f"{case}_coarse.npy.xz"
            source = out / "coarse" / (f"fold{fold}" if case in BASE else "oof") / link.name
            if not link.exists():
                link.symlink_to(source.resolve())


def refiner_cases(fold: int, k: int):
    """The real labelled cases fold ``fold``'s refiner trains on: the base cases and the other folds' CV cases."""
    return sorted(BASE + [c for c in CV if c not in folds(k)[fold]])


def train_refiner(out: Path, fold: int, k: int, threads: int, max_minutes: float) -> None:
    run = out / f"fold{fold}"
    _run_training(out, run, fold, k, refiner_cases(fold, k), REFINER_RECIPE, fold, threads, max_minutes,
                  ["--coarse", str(run / "coarse"), "--export", str(run / "refiner.npz")])


def _trained_folds(out: Path, k: int, file: str):
    """``(fold, its validation cases, out/fold<fold>/file)`` for each fold whose ``file`` was written; the
    others are named as not scored."""
    for i, held in enumerate(folds(k)):
        path = out / f"fold{i}" / file
        if path.exists():
            yield i, held, path
        else:
            print(f"fold {i}: no {path}; its cases are not scored")


def _held_out_case(case: str):
    """One validation case read end to end: ``(prepared study, expert label image, its array, score)``, where
    ``score(probabilities)`` post-processes them, maps the labels back onto the input grid and gives
    ``(labels on the crop, Dice / HD95 per region against the expert map)``."""
    import SimpleITK as sitk

    from gliomasuite.metrics import evaluate_labels
    from gliomasuite.preprocess import prepare, restore_labels
    from gliomasuite.segmentation.inference import postprocess
    from gliomasuite.study import find_segmentation, load_study

    folder = case_folder(case)
    truth_image = sitk.ReadImage(str(find_segmentation(folder)))
    truth = sitk.GetArrayFromImage(truth_image)
    prepared = prepare(load_study(folder).images)

    def score(probs):
        labels = postprocess(probs, prepared.brain)
        restored = sitk.GetArrayFromImage(restore_labels(labels, prepared))
        return labels, evaluate_labels(restored, truth, spacing=truth_image.GetSpacing()[::-1])

    return prepared, truth_image, truth, score


def evaluate_refiner(out: Path, k: int, out_json, threads: int, cv_run: Path, whole_box: bool = False) -> dict:
    """Each validation case end to end by its fold's 2 mm model alone and then refined by its fold's refiner
    (neither saw the case), with the paired difference per region."""
    import torch

    from gliomasuite.labels import volumes_cm3
    from gliomasuite.segmentation.inference import load_model, load_refiner, network_for, predict_probabilities
    from gliomasuite.segmentation.refine import WINDOW, refine_probabilities

    torch.set_num_threads(threads)
    device = torch.device("cpu")
    cases = {}
    for i, held, refiner_file in _trained_folds(out, k, "refiner.npz"):
        net, _, _ = network_for(load_model(str(cv_run / f"fold{i}" / "vnet.npz"))[0], device)
        refiner, _, _ = network_for(load_refiner(str(refiner_file))[0], device)
        for case in held:
            prepared, truth_image, truth, score = _held_out_case(case)
            start = time.perf_counter()
            plain = predict_probabilities(net, prepared.array, device)
            middle = time.perf_counter()
            refined = refine_probabilities([refiner], prepared.array, plain, device,
                                           window=None if whole_box else WINDOW)
            seconds = {"coarse": round(middle - start, 2), "refiner": round(time.perf_counter() - middle, 2)}
            cases[case] = {"fold": i, "group": group(case), "truth_cm3": volumes_cm3(truth, truth_image.GetSpacing()),
                           "fold_model": score(plain)[1], "fold_model_refined": score(refined)[1], "seconds": seconds}
            print(f"fold {i} {case:24s} " + "  ".join(
                f"{r} {cases[case]['fold_model'][r]['dice']:.3f} -> {cases[case]['fold_model_refined'][r]['dice']:.3f}"
                for r in ("WT", "TC", "ET")) + f"  {seconds}", flush=True)
    result = {"folds": folds(k), "recipe": REFINER_RECIPE, "coarse_models": str(cv_run),
              "refiner_window": None if whole_box else WINDOW, "cases": cases,
              "paired": paired(cases, "fold_model", "fold_model_refined")}
    if out_json:
        Path(out_json).write_text(json.dumps(result, indent=1, default=float))
    print(json.dumps(result["paired"], indent=1, default=float))
    return result


def _uncertainty_scores(labels, truth, brain, uncertainty):
    """How well the uncertainty map points at the wrong voxels of one case (prepared crop grid).

    ``auc``: chance that a wrong brain voxel is more uncertain than a right one. ``share_wrong_*``: the
    share of wrong voxels among the most uncertain brain voxels, with a budget of 10 % of the brain or
    of as many voxels as the predicted whole tumour. ``dice_*_corrected``: each region's Dice if a
    reader corrected exactly those voxels to the truth (the Dice error the budget would recover).
    """
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from gliomasuite.labels import region_masks
    from gliomasuite.metrics import dice

    inside = brain | (truth > 0) | (labels > 0)
    wrong = (labels != truth)[inside]
    u = uncertainty[inside]
    result = {"wrong_voxels": int(wrong.sum()),
              "auc": float(roc_auc_score(wrong, u)) if 0 < wrong.sum() < wrong.size else None}
    order = np.argsort(-u, kind="stable")
    budgets = {"brain10": int(0.1 * inside.sum()), "wt_volume": int((labels > 0).sum())}
    for key, budget in budgets.items():
        chosen = order[:budget]
        result[f"share_wrong_{key}"] = float(wrong[chosen].sum() / max(wrong.sum(), 1))
        corrected = labels[inside].copy()
        corrected[chosen] = truth[inside][chosen]
        fixed = labels.copy()
        fixed[inside] = corrected
        truth_regions, fixed_regions = region_masks(truth), region_masks(fixed)
        result[f"dice_{key}_corrected"] = {r: float(dice(fixed_regions[r], truth_regions[r])) for r in truth_regions}
    return result


def compare(before_json, after_json) -> dict:
    """Per-case paired difference of the fold models' Dice between two ``evaluate`` outputs over the same
    folds (e.g. the shipped recipe and the longer-training lever), with 95 % bootstrap intervals."""
    before, after = (json.loads(Path(p).read_text()) for p in (before_json, after_json))
    if before["folds"] != after["folds"]:
        raise SystemExit("The two runs did not use the same folds.")
    names = sorted(set(before["cases"]) & set(after["cases"]))
    merged = {c: {"before": before["cases"][c]["fold_model"], "after": after["cases"][c]["fold_model"]} for c in names}
    return {"before": str(before_json), "after": str(after_json), **paired(merged, "before", "after")}


def paired(cases: dict, before_key: str, after_key: str) -> dict:
    """Per-case paired difference of Dice between two results of each case (``cases[c][key][region]``), with
    95 % bootstrap intervals, the cases each way and the mean over the three regions."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "tools"))
    from validation_intervals import bootstrap_mean

    names = sorted(cases)
    result = {"cases": len(names)}
    for r in ("WT", "TC", "ET"):
        b = np.array([cases[c][before_key][r]["dice"] for c in names])
        a = np.array([cases[c][after_key][r]["dice"] for c in names])
        mean, low, high = bootstrap_mean(a - b)
        result[r] = {"before": float(b.mean()), "after": float(a.mean()), "difference": mean,
                     "difference_ci95": [low, high], "better_cases": int((a > b).sum()),
                     "worse_cases": int((a < b).sum())}
    result["mean_of_regions"] = {"before": float(np.mean([result[r]["before"] for r in ("WT", "TC", "ET")])),
                                 "after": float(np.mean([result[r]["after"] for r in ("WT", "TC", "ET")]))}
    return result


def evaluate(out: Path, k: int, out_json, threads: int = 2, reference: str = None) -> dict:
    """Each validation case by its own fold model (plain, with flips, averaged with the current
    default) and by the current default alone, end to end; uncertainty scores from the fold model's
    flips."""
    import torch

    from gliomasuite.labels import volumes_cm3
    from gliomasuite.preprocess import label_to_prepared
    from gliomasuite.segmentation.inference import load_model, network_for, predict_probabilities

    torch.set_num_threads(threads)
    device = torch.device("cpu")
    default, _ = load_model(reference)  # the reference run side by side (default: the shipped default)
    default_net, _, _ = network_for(default, device)
    cases = {}
    for i, held, weights in _trained_folds(out, k, "vnet.npz"):
        model, meta = load_model(str(weights))
        net, _, _ = network_for(model, device)
        for case in held:
            start = time.perf_counter()
            prepared, truth_image, truth, score = _held_out_case(case)
            plain = predict_probabilities(net, prepared.array, device)
            mean, std = predict_probabilities(net, prepared.array, device, tta=True, spread=True)
            reference = predict_probabilities(default_net, prepared.array, device)
            labels_tta, tta_scores = score(mean)
            row = {"fold": i, "group": group(case), "truth_cm3": volumes_cm3(truth, truth_image.GetSpacing()),
                   "fold_model": score(plain)[1], "fold_model_tta": tta_scores,
                   "fold_model_plus_default": score((plain + reference) / 2)[1], "default": score(reference)[1]}
            truth_crop = label_to_prepared(truth_image, prepared)
            row["uncertainty"] = _uncertainty_scores(labels_tta, truth_crop, prepared.brain, std.max(axis=0))
            row["seconds"] = round(time.perf_counter() - start, 1)
            cases[case] = row
            print(f"fold {i} {case:24s} " + "  ".join(
                f"{r} {row['fold_model'][r]['dice']:.3f} (default {row['default'][r]['dice']:.3f})"
                for r in ("WT", "TC", "ET")) + f"  AUC {row['uncertainty']['auc']}", flush=True)
    result = {"folds": folds(k), "init": INIT, "recipe": RECIPE, "default": default.name, "cases": cases,
              "summary": summarise(cases)}
    if out_json:
        Path(out_json).write_text(json.dumps(result, indent=1, default=float))
    print(json.dumps(result["summary"], indent=1, default=float))
    return result


def summarise(cases: dict) -> dict:
    """Mean and median Dice / HD95 per region with 95 % bootstrap intervals over cases (10,000
    resamples, seed 0), per institution group, paired differences against the default, the worst
    cases and the uncertainty scores."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "tools"))
    from validation_intervals import bootstrap_mean

    regions = ("WT", "TC", "ET")
    variants = ("fold_model", "fold_model_tta", "fold_model_plus_default", "default")
    names = sorted(cases)
    summary = {"cases": len(names)}
    for variant in variants:
        entry = {}
        for r in regions:
            d = np.array([cases[c][variant][r]["dice"] for c in names])
            h = np.array([cases[c][variant][r]["hd95"] for c in names])
            mean, low, high = bootstrap_mean(d)
            entry[r] = {"dice_mean": mean, "dice_ci95": [low, high], "dice_median": float(np.median(d)),
                        "hd95_median": float(np.median(h)), "hd95_mean": float(h.mean())}
            if variant != "default":
                diff = d - np.array([cases[c]["default"][r]["dice"] for c in names])
                m, lo, hi = bootstrap_mean(diff)
                entry[r]["minus_default"] = {"mean": m, "ci95": [lo, hi]}
        entry["by_group"] = {g: {r: float(np.mean([cases[c][variant][r]["dice"] for c in names
                                                   if cases[c]["group"] == g])) for r in regions}
                             for g in sorted({cases[c]["group"] for c in names})}
        entry["big_core_below_0.3"] = sorted(c for c in names if cases[c]["truth_cm3"]["TC"] > 10
                                             and cases[c][variant]["TC"]["dice"] < 0.3)
        summary[variant] = entry
    worst = sorted(names, key=lambda c: np.mean([cases[c]["fold_model"][r]["dice"] for r in regions]))[:6]
    summary["worst_fold_model"] = [{"case": c, **{r: round(cases[c]["fold_model"][r]["dice"], 3) for r in regions},
                                    "truth_cm3": cases[c]["truth_cm3"]} for c in worst]
    aucs = [cases[c]["uncertainty"]["auc"] for c in names if cases[c]["uncertainty"]["auc"] is not None]
    summary["uncertainty"] = {"auc_mean": float(np.mean(aucs)), "auc_ci95": list(bootstrap_mean(aucs)[1:]),
                              "auc_min": float(np.min(aucs))}
    for key in ("brain10", "wt_volume"):
        summary["uncertainty"][f"share_wrong_{key}_mean"] = float(np.mean(
            [cases[c]["uncertainty"][f"share_wrong_{key}"] for c in names]))
        summary["uncertainty"][f"dice_{key}_corrected_mean"] = {r: float(np.mean(
            [cases[c]["uncertainty"][f"dice_{key}_corrected"][r] for c in names])) for r in regions}
    summary["uncertainty"]["dice_tta_mean"] = {r: summary["fold_model_tta"][r]["dice_mean"] for r in regions}
    return summary


ENSEMBLE = "vnet-brats-cv4-v1"
VARIANTS = {"fold_model": "fold model", "fold_model_tta": "fold model + flips", "default": "vnet-brats-ensemble-v1",
            "fold_model_plus_default": "fold model and vnet-brats-ensemble-v1 averaged"}


def tables(result_json) -> str:
    """The model card's tables (markdown) from an ``evaluate`` result file: nothing is recomputed."""
    result = json.loads(Path(result_json).read_text())
    summary, cases = result["summary"], result["cases"]
    regions = ("WT", "TC", "ET")
    lines = [f"Cross-validated over {summary['cases']} cases ({len(result['folds'])} folds).", "",
             "| model on each held-out fold | " + " | ".join(f"{r} mean Dice (95% CI)" for r in regions)
             + " | median Dice WT/TC/ET | median HD95 mm WT/TC/ET |", "|---|---|---|---|---|---|"]
    for key, name in VARIANTS.items():
        entry = summary[key]
        lines.append(f"| {name} | " + " | ".join(
            f"{entry[r]['dice_mean']:.3f} ({entry[r]['dice_ci95'][0]:.3f}-{entry[r]['dice_ci95'][1]:.3f})" for r in regions)
            + " | " + " / ".join(f"{entry[r]['dice_median']:.3f}" for r in regions)
            + " | " + " / ".join(f"{entry[r]['hd95_median']:.1f}" for r in regions) + " |")
    lines += ["", "Paired difference against vnet-brats-ensemble-v1 on the same cases (mean, 95% bootstrap CI):", ""]
    for key, name in VARIANTS.items():
        if key == "default":
            continue
        lines.append(f"- {name}: " + ", ".join(
            f"{r} {summary[key][r]['minus_default']['mean']:+.3f} ({summary[key][r]['minus_default']['ci95'][0]:+.3f} to "
            f"{summary[key][r]['minus_default']['ci95'][1]:+.3f})" for r in regions))
    lines += ["", "| group | cases | fold model WT/TC/ET | vnet-brats-ensemble-v1 WT/TC/ET |", "|---|---|---|---|"]
    for g, values in summary["fold_model"]["by_group"].items():
        n = sum(1 for c in cases.values() if c["group"] == g)
        lines.append(f"| {g} | {n} | " + " / ".join(f"{values[r]:.3f}" for r in regions) + " | "
                     + " / ".join(f"{summary['default']['by_group'][g][r]:.3f}" for r in regions) + " |")
    lines += ["", "| worst cases (fold model) | WT | TC | ET | truth WT / TC / ET cm3 |", "|---|---|---|---|---|"]
    for w in summary["worst_fold_model"]:
        v = w["truth_cm3"]
        lines.append(f"| {w['case']} | {w['WT']:.3f} | {w['TC']:.3f} | {w['ET']:.3f} | "
                     f"{v['WT']:.1f} / {v['TC']:.1f} / {v['ET']:.1f} |")
    u = summary["uncertainty"]
    lines += ["", f"Uncertainty (fold model, 8 flips): AUC for wrong voxels {u['auc_mean']:.3f} "
              f"({u['auc_ci95'][0]:.3f}-{u['auc_ci95'][1]:.3f}; lowest case {u['auc_min']:.3f}); the most uncertain 10 % "
              f"of the brain holds {100 * u['share_wrong_brain10_mean']:.0f} % of the wrong voxels; as many voxels as the "
              f"predicted whole tumour hold {100 * u['share_wrong_wt_volume_mean']:.0f} %, and correcting them would "
              "raise the mean Dice from " + "/".join(f"{u['dice_tta_mean'][r]:.3f}" for r in regions) + " to "
              + "/".join(f"{u['dice_wt_volume_corrected_mean'][r]:.3f}" for r in regions) + " (WT/TC/ET).",
              "", "Cases with over 10 cm3 of core and TC Dice under 0.3: " + ", ".join(
                  f"{k}: {summary[k]['big_core_below_0.3'] or 'none'}" for k in VARIANTS)]
    return "\n".join(lines)




def _copy_into_models(source: Path, name: str) -> dict:
    """Copy a fold's network file (and the train log beside it) into gliomasuite/models as ``name``; returns the
    registry entry's ``file`` and ``sha256``."""
    import shutil

    from gliomasuite.registry import MODELS_DIR
    from gliomasuite.segmentation.weights import sha256

    target = MODELS_DIR / f"{name}.npz"
    shutil.copyfile(source, target)
    shutil.copyfile(source.parent / "train_log.jsonl", MODELS_DIR / f"{name}-train-log.jsonl")
    return {"file": target.name, "sha256": sha256(target)}


def register(out: Path, k: int) -> None:
    """Ship the fold models: copy each fold's weights (and train log) into gliomasuite/models as
    ``vnet-brats-cv4-f<i>`` and register them, and the ensemble of all of them as :data:`ENSEMBLE`,
    in models.json. The card (``ENSEMBLE.md``) is written by hand from the evaluation."""
    from gliomasuite.registry import REGISTRY
    from gliomasuite.segmentation.weights import load_weights

    registry = json.loads(REGISTRY.read_text())
    members = []
    for i, held in enumerate(folds(k)):
        source = out / f"fold{i}" / "vnet.npz"
        load_weights(source)  # refuses anything that is not our network file
        name = f"vnet-brats-cv{k}-f{i}"
        registry["models"][name] = {
            **_copy_into_models(source, name), "card": f"{ENSEMBLE}.md", "version": "1.0.0",
            "architecture": "VNet", "inputs": ["t1", "t1ce", "t2", "flair"], "optional_inputs": [],
            "network_resolution_mm": 2, "outputs": ["WT", "TC", "ET"],
            "labels": {"1": "Necrotic core", "2": "Edema", "4": "Enhancing tumour"}, "normalisation": "cohort",
            "use": f"fold {i} of {ENSEMBLE}; never trained on {', '.join(held)}"}
        members.append(name)
    registry["models"][ENSEMBLE] = {
        "members": members,
        "combine": "mean of the members' WT/TC/ET probabilities, equal weights, then the usual post-processing",
        "card": f"{ENSEMBLE}.md", "version": "1.0.0", "architecture": "Ensemble of VNet",
        "inputs": ["t1", "t1ce", "t2", "flair"], "optional_inputs": [], "network_resolution_mm": 2,
        "outputs": ["WT", "TC", "ET"], "labels": {"1": "Necrotic core", "2": "Edema", "4": "Enhancing tumour"},
        "normalisation": "cohort"}
    REGISTRY.write_text(json.dumps(registry, indent=1) + "\n")
    print(f"registered {ENSEMBLE} ({', '.join(members)})")


REFINED = "vnet-brats-cv4-refined-v1"


def register_refiners(out: Path, k: int) -> None:
    """Ship the fold refiners as ``refine-cv<k>-f<i>`` and :data:`REFINED`: :data:`ENSEMBLE` refined by all of
    them (averaged), in models.json."""
    from gliomasuite.registry import REGISTRY
    from gliomasuite.segmentation.inference import load_refiner

    registry = json.loads(REGISTRY.read_text())
    names = []
    for i, held in enumerate(folds(k)):
        source = out / f"fold{i}" / "refiner.npz"
        load_refiner(str(source))  # refuses anything that is not one of our refiners
        name = f"refine-cv{k}-f{i}"
        registry["models"][name] = {
            **_copy_into_models(source, name), "card": f"{REFINED}.md", "version": "1.0.0",
            "architecture": "VNet (1 mm refiner)", "inputs": ["t1", "t1ce", "t2", "flair", "coarse WT/TC/ET"],
            "network_resolution_mm": 1, "outputs": ["WT", "TC", "ET"], "refiner": True,
            "use": f"refiner of fold {i} of {REFINED}; never trained on {', '.join(held)}"}
        names.append(name)
    registry["models"][REFINED] = {
        "coarse": ENSEMBLE, "refiners": names,
        "combine": f"{ENSEMBLE}'s probabilities, then around the tumour the mean of the refiners' 1 mm probabilities",
        "card": f"{REFINED}.md", "version": "1.0.0", "architecture": "Ensemble of VNet + 1 mm refiners",
        "inputs": ["t1", "t1ce", "t2", "flair"], "optional_inputs": [], "network_resolution_mm": 1,
        "outputs": ["WT", "TC", "ET"], "labels": {"1": "Necrotic core", "2": "Edema", "4": "Enhancing tumour"},
        "normalisation": "cohort"}
    REGISTRY.write_text(json.dumps(registry, indent=1) + "\n")
    print(f"registered {REFINED} ({ENSEMBLE} refined by {', '.join(names)})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["prepare", "folds", "train", "evaluate", "register", "tables", "compare",
                                         "ceiling", "coarse", "train-refiner", "evaluate-refiner",
                                         "register-refiners", "pseudo-labels"])
    parser.add_argument("--out", default=str(ROOT / ".trainpack" / "cv"))
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--fold", type=int)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (train: per fold; evaluate: in all)")
    parser.add_argument("--max-minutes", type=float)
    parser.add_argument("--out-json")
    parser.add_argument("--continue-from", metavar="RUN", help="train: start each fold from RUN's model of that fold "
                        "(a second round: the longer-training lever), e.g. .trainpack/cv")
    parser.add_argument("--lr", type=float, help="train: the recipe's peak learning rate instead of its own")
    parser.add_argument("--iterations", type=int, help="train: the recipe's steps instead of its own")
    parser.add_argument("--class-ratios", type=float, nargs=4, metavar=("BG", "NCR", "ED", "ET"),
                        help="train: patch centres drawn in these proportions instead of the recipe's 1 1 1 2 (the "
                             "non-enhancing-core lever: more patches on necrotic/non-enhancing core)")
    parser.add_argument("--carvemix", type=float, help="train: share of samples with another training case's "
                        "tumour pasted in (the lesion-mixing lever)")
    parser.add_argument("--reference", help="evaluate: the model scored side by side (default: the shipped default; "
                        "give one that never saw the cases, e.g. vnet-brats-ensemble-v1, once the default is made of "
                        "fold models)")
    parser.add_argument("--before", help="compare: the evaluate output of the recipe")
    parser.add_argument("--whole-box", action="store_true",
                        help="evaluate-refiner: run the refiner on the whole box around the tumour at once instead of "
                             "in windows of its training patch size")
    parser.add_argument("--coarse-run", default=str(ROOT / ".trainpack" / "cv"),
                        help="coarse, evaluate-refiner: the run whose fold models give the coarse probabilities")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.step == "prepare":
        prepare(out)
    elif args.step == "folds":
        for i, f in enumerate(folds(args.folds)):
            print(i, " ".join(f))
    elif args.step == "train":
        train(out, args.fold, args.folds, args.threads, args.max_minutes,
              Path(args.continue_from) if args.continue_from else None, args.lr, args.iterations, args.carvemix,
              args.class_ratios)
    elif args.step == "tables":
        print(tables(args.out_json))
    elif args.step == "register":
        register(out, args.folds)
    elif args.step == "compare":
        print(json.dumps(compare(args.before, args.out_json), indent=1))
    elif args.step == "ceiling":
        print(json.dumps(ceiling(Path(args.coarse_run) / "cache"), indent=1))
    elif args.step == "coarse":
        coarse_predictions(out, args.folds, args.threads, Path(args.coarse_run))
    elif args.step == "train-refiner":
        train_refiner(out, args.fold, args.folds, args.threads, args.max_minutes)
    elif args.step == "pseudo-labels":
        pseudo_labels(out, args.folds, args.threads, Path(args.continue_from))
    elif args.step == "register-refiners":
        register_refiners(out, args.folds)
    elif args.step == "evaluate-refiner":
        evaluate_refiner(out, args.folds, args.out_json, args.threads, Path(args.coarse_run), args.whole_box)
    else:
        evaluate(out, args.folds, args.out_json, args.threads, args.reference)


if __name__ == "__main__":
    main()
