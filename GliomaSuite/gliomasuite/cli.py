"""The ``gliomasuite`` command line.

Every command that takes long prints human progress, or with ``--json-progress`` one JSON object
per line (see :mod:`gliomasuite.progress`) for the Slicer module's background runner. A problem
with the user's input ends the command with one sentence on stderr and exit status 2; nothing
partial is left behind (outputs are written to a temporary name and moved into place).
Exit status 130 means the job was cancelled (Ctrl+C or SIGTERM from the Slicer module's Cancel).
"""

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Callable, List, Optional

from . import __version__
from .errors import CancelledError, GliomaSuiteError
from .modalities import ALWAYS_NEEDED, MODALITIES
# committed is imported here, not in the SIGTERM handler: an import there fails during interpreter exit.
from .outputs import (OutputSet, begin_command, check_output_file, committed, write_file_atomically,
                      write_image_atomically, write_json_atomically)
from .commands.help import DEVICE_HELP, SEGMENTATION_MODEL_HELP, SURVIVAL_MODEL_HELP, HelpFormatter
from .progress import Progress

EXIT_USER_ERROR = 2
EXIT_CANCELLED = 130


def _study_source(args) -> object:
    """A folder, a list of files, or explicit ``--t1 ... --flair`` files (modality -> path)."""
    explicit = {m: getattr(args, m) for m in MODALITIES if getattr(args, m, None)}
    if explicit and args.study:
        raise GliomaSuiteError("Give either a study folder/files or --t1/--t1ce/--t2/--flair, not both.")
    if explicit:
        return explicit
    if not args.study:
        raise GliomaSuiteError("No study given: pass a folder with the T1, T1ce, T2 and FLAIR images, "
                               "or the files, or --t1/--t1ce/--t2/--flair.")
    return args.study[0] if len(args.study) == 1 else list(args.study)


def _check_output(path: Path, overwrite: bool, image: bool = False) -> None:
    check_output_file(path, overwrite, image=image)


def segment_arguments_study(args, progress_update: Callable[[float, str], None], note: Callable[[str], None],
                            model_name: Optional[str], probabilities: bool = False, outputs=(),
                            uncertainty: bool = False):
    """Load the study named by the study arguments and segment it: ``(study, SegmentationResult)``.

    The one path from command-line arguments to a label map, for ``segment`` and ``survival --study``.
    """
    from .segmentation.inference import default_model_for, load_model, required_modalities, segment_study
    from .study import load_study

    progress_update(0.0, "Loading the study")
    registered = bool(getattr(args, "coregister", False))  # then DICOM series of other frames of reference may come
    if model_name:
        model, _ = load_model(model_name)
        study = load_study(_study_source(args), required=required_modalities(model), log=note,
                           other_frames_ok=registered)
    else:
        # The shipped default needs all four; a study without T1 or T2 gets the model trained without them
        # (segment_study says which model ran, and refuses a study the chosen model cannot do without).
        study = load_study(_study_source(args), required=ALWAYS_NEEDED, log=note, other_frames_ok=registered)
        model, _ = load_model(default_model_for(study.images))
    for output in outputs:  # checked again now that the input files are known: an input is never replaced
        check_output_file(output, overwrite=True, inputs=study.paths.values())
    if getattr(args, "coregister", False):
        from .alignment import coregister_to_t1ce

        progress_update(0.02, "Registering the sequences to the T1ce")
        study.images = coregister_to_t1ce(study.images, note)
    result = segment_study(study, model=model, device=args.device, tta=args.tta, probabilities=probabilities,
                           window=args.window, progress=progress_update, engine=getattr(args, "engine", "auto"),
                           check_brain=not args.skip_brain_check, uncertainty=uncertainty)
    for warning in result.warnings:
        note(warning)
    return study, result


def cmd_segment(args, progress: Progress) -> dict:
    output = Path(args.output)
    _check_output(output, args.overwrite, image=True)
    outputs = [output]
    if args.probabilities:
        _check_output(Path(args.probabilities), args.overwrite, image=True)
        outputs.append(Path(args.probabilities))
        if Path(args.probabilities).resolve() == output.resolve():
            raise GliomaSuiteError("--probabilities names the same file as -o; give the probabilities their own file.")
    if args.uncertainty:
        _check_output(Path(args.uncertainty), args.overwrite, image=True)
        if len({Path(o).resolve() for o in outputs + [Path(args.uncertainty)]}) != len(outputs) + 1:
            raise GliomaSuiteError("--uncertainty names the same file as another output; give it its own file.")
        outputs.append(Path(args.uncertainty))
    if args.dicom_seg:  # refused before any work: no highdicom, a study not from DICOM, a bad file name
        from .report.dicom import check_dicom_seg_request, save_dicom, segment_dicom_seg

        _check_output(Path(args.dicom_seg), args.overwrite)
        check_dicom_seg_request(_study_source(args), args.dicom_seg)
        outputs.append(Path(args.dicom_seg))
    study, result = segment_arguments_study(args, progress.update, progress.note, args.model,
                                            probabilities=bool(args.probabilities), outputs=outputs,
                                            uncertainty=bool(args.uncertainty))
    dicom_seg = segment_dicom_seg(study, result.labels, result.model, progress.note) if args.dicom_seg else None
    with OutputSet(*outputs) as written:  # every output file appears at once, or none (an error, a cancel)
        write_image_atomically(result.labels, output, model=result.model, stage=written)
        if dicom_seg is not None:
            save_dicom(dicom_seg, Path(args.dicom_seg), stage=written)
        if result.probabilities is not None:
            write_image_atomically(result.probabilities, Path(args.probabilities), model=result.model, stage=written)
        if result.uncertainty is not None:
            write_image_atomically(result.uncertainty, Path(args.uncertainty), model=result.model, stage=written)
        written.commit()
    summary = {"gliomasuite_version": __version__, "output": str(output), "device": result.device, "engine": result.engine, "model": result.model,
               "volumes_cm3": {k: round(v, 3) for k, v in result.volumes_cm3.items()},
               "warnings": result.warnings, "brain_check": result.brain_check}
    if args.probabilities:
        summary["probabilities"] = str(args.probabilities)
    if args.dicom_seg:
        summary["dicom_seg"] = str(args.dicom_seg) if dicom_seg is not None else None
    if args.uncertainty:
        summary["uncertainty"] = str(args.uncertainty) if result.uncertainty is not None else None
        summary["uncertain_regions"] = result.uncertain_regions
    if not progress.json_lines:
        for name, value in summary["volumes_cm3"].items():
            print(f"  {name:>3}: {value:8.2f} cm3")
        if args.uncertainty and result.uncertainty is not None:
            print("Most worth checking: " + ("; ".join(r["sentence"] for r in result.uncertain_regions)
                                             or "no region; the passes agree everywhere"))
    return summary


#: The demo patient: age, scan dates, and the follow-up's tumour growth and head motion in the scanner.
DEMO_AGE = 60
DEMO_DATES = ("2024-01-10", "2024-04-03")
DEMO_GROWTH = 1.2
DEMO_MOTION = ((3.0, -2.0, 4.0), (4.0, -3.0, 2.0))


def cmd_demo(args, progress: Progress) -> dict:
    """The whole product on the embedded synthetic patient: a baseline and a follow-up study are
    built, the baseline segmented and scored against its truth, survival estimated, the two time
    points compared by RANO 2.0, and the report written."""
    import SimpleITK as sitk

    from .demo import make_demo_study
    from .followup.pipeline import compare_timepoints
    from .followup.timepoints import TimePoint, parse_date
    from .metrics import evaluate_labels
    from .report.pipeline import write_report
    from .segmentation.inference import load_model, segment_study
    from .study import find_segmentation, load_study
    from .survival.score import score_label_map

    out = Path(args.output)
    study_dir, later_dir = out / "study", out / "followup-study"
    stage = lambda start, end: (lambda f, m: progress.update(start + (end - start) * f, m))  # noqa: E731
    progress.update(0.0, f"Writing the synthetic demo patient's two studies to {study_dir} and {later_dir}")
    make_demo_study(study_dir, seed=args.seed)
    make_demo_study(later_dir, seed=args.seed, growth=DEMO_GROWTH, motion=DEMO_MOTION)
    study = load_study(study_dir, log=progress.note)
    model, _ = load_model(args.model)
    result = segment_study(study, model=model, device=args.device, tta=args.tta, progress=stage(0.1, 0.35))
    seg_path = out / "segmentation.nii.gz"
    write_image_atomically(result.labels, seg_path, model=result.model)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(find_segmentation(study_dir))))
    pred = sitk.GetArrayFromImage(result.labels)
    scores = evaluate_labels(pred, truth, spacing=study.reference.GetSpacing()[::-1])

    progress.update(0.35, f"Estimating survival at age {DEMO_AGE}")
    survival = score_label_map(result.labels, DEMO_AGE, out / "survival", source=seg_path)
    followup = compare_timepoints(
        [TimePoint("baseline", study_dir, parse_date(DEMO_DATES[0])),
         TimePoint("follow-up", later_dir, parse_date(DEMO_DATES[1]))],
        out / "followup", model=args.model, device=args.device, progress=stage(0.4, 0.85))
    progress.update(0.85, "Writing the report")
    written = write_report(study_dir, out / "report", seg=seg_path, survival=out / "survival",
                           followup=out / "followup", age=DEMO_AGE, overwrite=True, progress=stage(0.85, 1.0))
    report = {"study": str(study_dir), "segmentation": str(seg_path),
              "model": result.model, "device": result.device, "volumes_cm3": result.volumes_cm3, "warnings": result.warnings,
              "dice": {r: round(m["dice"], 4) for r, m in scores.items()},
              "hd95_mm": {r: round(m["hd95"], 2) for r, m in scores.items()},
              "survival": {"age": DEMO_AGE, "sentence": survival["sentence"], "json": str(out / "survival" / "survival.json")},
              "followup": {"category": followup["response"]["category"], "sentence": followup["response"]["sentence"],
                           "json": str(out / "followup" / "followup.json")},
              "report": str(written.get("pdf", out / "report" / "report.pdf"))}
    write_json_atomically(report, out / "demo_result.json")
    if not progress.json_lines:
        print("Dice against the demo's truth: " + ", ".join(f"{r} {d:.3f}" for r, d in report["dice"].items()))
        print(survival["sentence"])
        print(followup["response"]["sentence"])
        print(f"Results in {out}; the report is {report['report']}")
    return report


def cmd_train_segmentation(args, progress: Progress) -> dict:
    from .segmentation.cache import build_cache, cached_cases
    from .segmentation.training import config_from_arguments, export_checkpoint, train

    from .segmentation.cache import find_cases

    if not Path(args.data).is_dir() or not find_cases(Path(args.data)):
        raise GliomaSuiteError(f"{args.data} is not a folder of labelled cases (one sub-folder per case, each with "
                               "its images and a _seg label map); give such a folder.")
    cache = Path(args.cache or Path(args.out) / "cache")
    progress.update(0.0, f"Preparing the training cache in {cache}")
    build_cache(args.data, cache, log=progress.note)
    cases = cached_cases(cache)
    validation = set(args.validation or [])
    unknown = validation - set(cases)
    if unknown:
        raise GliomaSuiteError(f"Validation case(s) {', '.join(sorted(unknown))} are not in {args.data}.")
    if args.folds:
        from .segmentation.config import case_folds

        if validation:
            raise GliomaSuiteError("Give either --validation NAMES or --folds K --fold I, not both.")
        if args.fold is None or not 0 <= args.fold < args.folds:
            raise GliomaSuiteError(f"With --folds {args.folds}, say which fold to hold out: --fold 0 to {args.folds - 1}.")
        try:
            validation = set(case_folds(cases, args.folds, seed=args.seed)[args.fold])
        except ValueError as exc:
            raise GliomaSuiteError(f"The {len(cases)} cases in {args.data} {exc}.") from exc
    elif args.fold is not None:
        raise GliomaSuiteError("--fold needs --folds K (the number of cross-validation folds).")
    config = config_from_arguments(args, cache, args.out, [c for c in cases if c not in validation])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "split.json").write_text(json.dumps(
        {"training": config.cases, "validation": sorted(validation), "folds": args.folds, "fold": args.fold,
         "seed": args.seed}, indent=1))
    out = train(config, resume=args.resume, report=progress.update)
    sha = export_checkpoint(out / "checkpoint.pt", out / "vnet.npz")
    return {"weights": str(out / "vnet.npz"), "sha256": sha, "training_cases": len(config.cases),
            "validation_cases": sorted(validation)}


def cmd_calibrate_segmentation(args, progress: Progress) -> dict:
    """Fix a trained V-Net's normalisation statistics from its training cases (norm="cohort")."""
    import torch

    from .preprocess import prepare
    from .segmentation.cache import find_cases
    from .segmentation.calibration import calibrate
    from .segmentation.inference import load_network, required_modalities, with_absent_as_zeros
    from .segmentation.weights import save_weights
    from .study import load_study

    output = Path(args.output)
    _check_output(output, args.overwrite)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, metadata = load_network(args.model)
    folders = find_cases(Path(args.data))
    if args.cases:
        unknown = set(args.cases) - {f.name for f in folders}
        if unknown:
            raise GliomaSuiteError(f"Case(s) {', '.join(sorted(unknown))} are not labelled cases in {args.data}.")
        folders = [f for f in folders if f.name in set(args.cases)]
    folders = [f for f in folders if f.name not in set(args.exclude or [])]
    if not folders:
        raise GliomaSuiteError(f"No labelled cases to calibrate on in {args.data}.")
    names = [f.name for f in folders]
    cannot = sorted(set(args.without) & set(required_modalities(model)))
    if cannot:
        raise GliomaSuiteError(f"{model.name} cannot do without {', '.join(cannot)}.")

    def arrays():
        for i, folder in enumerate(folders):
            progress.update(i / len(folders), f"Calibrating on {folder.name} ({i + 1}/{len(folders)})")
            yield prepare(with_absent_as_zeros(load_study(folder).images, args.without)).array

    calibrated = calibrate(model, arrays())
    metadata = dict(metadata, calibration={"from": model.name, "cases": names, "without": list(args.without)})
    sha = save_weights(calibrated, output, metadata=metadata, input_downsample=calibrated.input_downsample)
    progress.update(1.0, f"Wrote {output}")
    return {"weights": str(output), "sha256": sha, "calibration_cases": len(names)}


def cmd_fit_survival(args, progress: Progress) -> dict:
    """Fit the full and reduced Cox models (+ SOMs) on a cohort table and write them as JSON."""
    from .survival.fit import fit_cohort_model, write_models
    from .survival.plot import plot_calibration

    out = Path(args.out)
    outputs = [out / f"{args.name}{suffix}" for suffix in (".json", "-reduced.json", ".md", "-calibration.png",
                                                           "-reduced-calibration.png")]
    for path in outputs:
        _check_output(path, args.overwrite)
    result = fit_cohort_model(args.table, name=args.name, folds=args.folds, repeats=args.repeats, seed=args.seed,
                              som_iterations=args.som_iterations, progress=progress.update, note=progress.note)
    with OutputSet(*outputs) as written:  # the models, their card and plots appear together, or none of them
        paths = write_models(result, out, args.name, stage=written)
        for variant in ("full", "reduced"):
            plot_calibration(result[variant], out / f"{Path(paths[variant]).stem}-calibration.png", stage=written)
        write_file_atomically(lambda tmp: Path(tmp).write_text(_fit_survival_card(args, result)), outputs[2], ".md",
                              stage=written)
        written.commit()
    paths["card"] = str(outputs[2])
    if not progress.json_lines:
        for variant, s in result["summary"].items():
            print(f"  {variant:>7}: CV C-index {s['cv_cindex']:.3f} (age alone {s['age_only_cv_cindex']:.3f}), "
                  f"BraTS 3-class accuracy {s['brats_3class_accuracy']:.3f}")
    return {"models": paths, "summary": result["summary"]}


def _fit_survival_card(args, result: dict) -> str:
    """The model card of what ``fit-survival`` fitted, with the command that reproduces it."""
    from .survival.fit import model_card

    table = str(args.table)
    data_root = os.environ.get("GLIOMASUITE_DATA")
    if data_root and Path(table).resolve().is_relative_to(Path(data_root).resolve()):
        table = "$GLIOMASUITE_DATA/" + Path(table).resolve().relative_to(Path(data_root).resolve()).as_posix()
    command = (f"gliomasuite fit-survival --table {table} --out {args.out} --name {args.name} --folds {args.folds} "
               f"--repeats {args.repeats} --seed {args.seed} --som-iterations {args.som_iterations}")
    return model_card({**result, "full": {**result["full"], "name": args.name},
                       "reduced": {**result["reduced"], "name": args.name + "-reduced"}}, command)


#: Share of the progress bar that segmentation takes in ``survival --study`` (scoring is quick).
SEGMENTATION_SHARE = 0.85


def cmd_survival(args, progress: Progress) -> dict:
    """Score a table (one row per patient), or one patient from a label map or a study (+ age)."""
    from .survival.score import load_models, score_label_map, score_table, write_patient_result

    study_given = bool(args.study) or any(getattr(args, m) for m in MODALITIES)
    if args.table and (args.seg or study_given or args.age is not None):
        raise GliomaSuiteError("--table scores a table of patients (age in its age column); give it alone, without "
                               "--seg, --study, --t1/--t1ce/--t2/--flair or --age.")
    if not (args.table or args.seg or study_given):
        raise GliomaSuiteError("Nothing to score: give --table CSV (one row per patient), --seg LABELMAP with --age, "
                               "or --study STUDY with --age (segments the study first).")
    if not study_given:
        for name in ("device", "tta", "window", "segmentation_model"):
            if getattr(args, name) not in (None, False, "auto"):
                raise GliomaSuiteError(f"--{name.replace('_', '-')} is for segmenting a study; give --study too, or "
                                       "leave it out.")
    output = Path(args.output)
    if args.table:
        _check_output(output, args.overwrite)
        summary = score_table(args.table, output, model=args.model, note=progress.note)
        if not progress.json_lines:
            print(f"Scored {summary['scored']} of {summary['rows']} rows with {summary['model']} "
                  f"({summary['why']}); results in {output}")
        return summary
    if args.age is None:
        raise GliomaSuiteError("The patient's age is missing: pass --age YEARS (the model needs it).")
    from .survival.cox import check_value

    check_value("age", args.age)
    load_models(args.model)  # an unknown model is refused before any segmentation
    segmenting = study_given and not args.seg
    outputs = ["survival.json", "survival.png"] + (["segmentation.nii.gz"] if segmenting else [])
    for name in outputs:
        _check_output(output / name, args.overwrite)
    if not study_given:
        progress.update(0.1, "Measuring the tumour")
        result = score_label_map(args.seg, args.age, model=args.model, note=progress.note)
    elif args.seg:
        seg = _label_map_on_study_grid(args, progress)
        progress.update(0.5, "Measuring the tumour")
        result = score_label_map(seg, args.age, model=args.model, note=progress.note, source=args.seg)
    else:
        _, segmentation = segment_arguments_study(
            args, lambda f, m: progress.update(SEGMENTATION_SHARE * f, m), progress.note, args.segmentation_model)
        if segmentation.brain_check:
            raise GliomaSuiteError("The study was not segmented, so there is nothing to score (nothing was written): "
                                   + "; ".join(segmentation.brain_check) + ". If it is skull-stripped brain MRI "
                                   "with each sequence in its place, run again with --skip-brain-check.")
        if segmentation.volumes_cm3["WT"] == 0:
            raise GliomaSuiteError("The segmentation found no tumour in this study, so there is nothing to score "
                                   "(nothing was written); check that the study shows a glioma, or give a label map "
                                   "with --seg.")
        progress.update(SEGMENTATION_SHARE, "Measuring the tumour")
        seg_path = output / "segmentation.nii.gz"
        # Scored before anything is written: a study without tumour leaves no files behind.
        result = score_label_map(segmentation.labels, args.age, model=args.model, note=progress.note,
                                 source=seg_path)
    with OutputSet(*(output / name for name in outputs)) as written:  # all at once, or none (an error, a cancel)
        if segmenting:
            write_image_atomically(segmentation.labels, output / "segmentation.nii.gz", model=segmentation.model,
                                   stage=written)
        write_patient_result(result, output, stage=written)
        written.commit()
    if not progress.json_lines:
        print(result["sentence"])
        print(f"Results in {output / 'survival.json'} and {output / 'survival.png'}")
    summary = {"output": str(output / "survival.json"), "plot": result["plot"], "model": result["model"]["name"],
               "model_variant": result["model"]["variant"], "sentence": result["sentence"]}
    if study_given:
        summary["segmentation"] = result["segmentation"]
    return summary


def _label_map_on_study_grid(args, progress: Progress):
    """``--seg`` with ``--study``: the label map, refused unless it lies on the study's grid."""
    from .study import grid_differences, load_study
    from .survival.features import read_label_map

    progress.update(0.0, "Loading the study to check the label map's grid")
    study = load_study(_study_source(args), required=(), log=progress.note, other_frames_ok=True)  # only its grid
    seg = read_label_map(args.seg)
    diffs = grid_differences(seg, study.reference)
    if diffs:
        raise GliomaSuiteError(
            f"The label map {args.seg} is not on the grid of the study's {study.reference_modality.upper()} image "
            f"({', '.join(diffs)} differ), so it is not a segmentation of this study; give the label map made from "
            "this study, or leave --seg out to segment the study.")
    return seg


def _add_study_arguments(p: argparse.ArgumentParser, as_option: bool = False) -> None:
    help_text = "study folder, or the image files (modality read from each name)"
    if as_option:
        p.add_argument("--study", nargs="+", metavar="STUDY", help=help_text)
    else:
        p.add_argument("study", nargs="*", help=help_text)
    for m, label in (("t1", "T1"), ("t1ce", "T1ce (post-contrast)"), ("t2", "T2"), ("flair", "FLAIR")):
        p.add_argument(f"--{m}", metavar="FILE", help=f"the {label} image, when names do not say it")


def _add_brain_check_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip-brain-check", action="store_true",
                   help="segment even if the images do not look like skull-stripped brain MRI with each sequence "
                        "in its place (by default such a study is not segmented: the map is empty and a warning "
                        "says why)")
    p.add_argument("--coregister", action="store_true",
                   help="register each sequence rigidly to the T1ce before segmenting (for sequences that were not "
                        "co-registered; a warning says when they look misregistered); needed for DICOM series "
                        "whose frames of reference differ, which are otherwise refused")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gliomasuite", formatter_class=HelpFormatter, description=(
        "Glioma MRI from T1, T1ce, T2 and FLAIR: segmentation (necrotic core, edema, enhancing tumour), survival "
        "estimate, follow-up by RANO 2.0 with a recurrence estimate, PDF/JSON/CSV and DICOM SEG/SR reports, cohorts "
        "on Dask, and training on your own data. Research use, not for diagnosis. 'gliomasuite COMMAND --help' "
        "describes each command."))
    parser.add_argument("--version", action="version", version=f"gliomasuite {__version__}")
    parser.add_argument("--json-progress", action="store_true",
                        help="print progress as one JSON object per line (for the Slicer module)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("segment", help="segment one study into a BraTS label map (0, 1 NCR, 2 ED, 4 ET)")
    _add_study_arguments(p)
    p.add_argument("-o", "--output", required=True, help="label map to write (.nii.gz, .nrrd, ...)")
    p.add_argument("--probabilities", metavar="FILE", help="also write WT/TC/ET probabilities here")
    p.add_argument("--uncertainty", metavar="FILE", help="also write a per-voxel uncertainty map here (disagreement "
                   "of the network passes with flips, 0 to 0.5) and list the regions most worth checking; runs the "
                   "8 flip passes, so the label map is the --tta one")
    p.add_argument("--dicom-seg", metavar="FILE", help="also write the label map as a DICOM SEG referencing the "
                   "study's T1ce DICOM series (needs a DICOM study and highdicom)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"],
                   help=DEVICE_HELP)
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation (8 passes: slower, smoother)")
    p.add_argument("--model", help=SEGMENTATION_MODEL_HELP)
    p.add_argument("--window", type=int, help="sliding-window size in network voxels (less memory)")
    p.add_argument("--engine", default="auto", choices=["auto", "torch", "onnxruntime"],
                   help="what runs the network on the CPU (auto: ONNX Runtime when installed, else PyTorch)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    _add_brain_check_argument(p)
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("demo", help="make the embedded synthetic patient (a baseline and a follow-up), segment both, "
                                    "score survival, compare them and write the report")
    p.add_argument("-o", "--output", default="demo-output", help="folder for the studies and results")
    p.add_argument("--seed", type=int, default=0, help="which synthetic patient (each seed is another brain and tumour)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"],
                   help=DEVICE_HELP)
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation (8 passes: slower, smoother)")
    p.add_argument("--model", help=SEGMENTATION_MODEL_HELP)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train-segmentation", help="train the V-Net on a folder of labelled BraTS-style cases")
    p.add_argument("--data", required=True, help="folder with one sub-folder per case (images + _seg)")
    p.add_argument("--out", required=True, help="folder for the cache, checkpoints, log and weights")
    p.add_argument("--cache", help="where to keep the preprocessed cases (default OUT/cache)")
    p.add_argument("--validation", nargs="*", help="case names held out of training")
    p.add_argument("--folds", type=int, help="case-level cross-validation: split the cases into K folds ...")
    p.add_argument("--fold", type=int, help="... and hold out fold I (0-based); OUT/split.json lists both sets")
    from .segmentation.config import add_training_arguments

    add_training_arguments(p)
    p.set_defaults(func=cmd_train_segmentation)

    p = sub.add_parser("calibrate-segmentation",
                       help="fix a trained V-Net's normalisation statistics from its training cases")
    p.add_argument("--model", required=True, help="registered model name or weights file to calibrate")
    p.add_argument("--data", required=True, help="folder of labelled cases (the model's training cases)")
    p.add_argument("--cases", nargs="*", help="only these cases")
    p.add_argument("--exclude", nargs="*", help="leave these cases out (e.g. the validation cases)")
    p.add_argument("--without", nargs="*", default=[], choices=["t1", "t2"],
                   help="calibrate as for studies lacking these (the model must be trained to cope)")
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    p.add_argument("-o", "--output", required=True, help="weights file to write (.npz)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing weights file")
    p.set_defaults(func=cmd_calibrate_segmentation)

    p = sub.add_parser("fit-survival", help="fit the Cox survival models and SOMs on a cohort table")
    p.add_argument("--table", required=True, help="CSV: age, time_days, event and the tumour shape columns")
    p.add_argument("--out", required=True, help="folder for NAME.json, NAME-reduced.json and calibration plots")
    p.add_argument("--name", default="survival", help="model name (file stem)")
    p.add_argument("--folds", type=int, default=5, help="folds of the patient-level cross-validation")
    p.add_argument("--repeats", type=int, default=3, help="repeats of the cross-validation")
    p.add_argument("--seed", type=int, default=0, help="random seed of the folds and the SOM")
    p.add_argument("--som-iterations", type=int, default=5000, help="training iterations of the self-organising map")
    p.add_argument("--overwrite", action="store_true", help="replace existing model files in OUT")
    p.set_defaults(func=cmd_fit_survival)

    p = sub.add_parser("survival", help="survival estimate for a table of patients, or one patient from a study or "
                                        "a label map + age")
    p.add_argument("--table", help="CSV with one row per patient (age and tumour feature columns)")
    _add_study_arguments(p, as_option=True)
    p.add_argument("--seg", metavar="LABELMAP", help="a BraTS label map (0, 1 NCR, 2 ED, 4 ET) of one patient; with "
                   "--study, used instead of segmenting it (it must lie on the study's grid)")
    p.add_argument("--age", type=float, help="the patient's age in years (with --study or --seg)")
    p.add_argument("-o", "--output", required=True, help="OUT.csv for --table; a folder for --study or --seg "
                   "(survival.json, survival.png, and segmentation.nii.gz when the study is segmented)")
    p.add_argument("--model", help=SURVIVAL_MODEL_HELP)
    p.add_argument("--segmentation-model", help="for --study: " + SEGMENTATION_MODEL_HELP)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"], help="for segmenting --study")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation when segmenting --study")
    p.add_argument("--window", type=int, help="sliding-window size in network voxels when segmenting --study")
    _add_brain_check_argument(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=cmd_survival)

    from .commands import followup

    followup.add_parser(sub)
    from .commands import report

    report.add_parser(sub)
    from .commands import batch

    batch.add_parser(sub)
    from .commands import train_recurrence

    train_recurrence.add_parser(sub)
    for command in sub.choices.values():  # every option's default shown after its help
        command.formatter_class = HelpFormatter
    return parser


def _install_cancel_handler() -> None:
    def on_term(signum, frame):
        if not committed():  # once the outputs are in place there is nothing left to cancel
            raise KeyboardInterrupt
    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not in the main thread (e.g. called from a test runner thread)
        pass


def _tolerant_output() -> None:
    """Under an ASCII locale, print "cm³" as an escape instead of failing after the work is done."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):  # replaced streams (tests, Slicer) keep their own rules
            pass


def main(argv: Optional[List[str]] = None) -> int:
    _tolerant_output()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    progress = Progress(json_lines=args.json_progress)
    begin_command()
    _install_cancel_handler()
    try:
        result = args.func(args, progress)
    except KeyboardInterrupt:
        progress.error("Cancelled; nothing was written.")
        return EXIT_CANCELLED
    except CancelledError as exc:
        progress.error(str(exc))
        return EXIT_CANCELLED
    except GliomaSuiteError as exc:
        progress.error(str(exc))
        return EXIT_USER_ERROR
    progress.done(result)
    if committed() and argv is None:  # a command process, not a call from Python
        # Everything is written and said: a SIGTERM from now on is ignored instead of killing the
        # interpreter on its way out (which restores the default action for its own handlers, and may
        # take the signal on any of its threads), whose exit status would then say the command failed.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return 0


if __name__ == "__main__":
    sys.exit(main())
