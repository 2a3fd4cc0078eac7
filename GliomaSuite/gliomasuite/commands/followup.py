"""``gliomasuite followup TP1 TP2 [...] -o OUT``: compare a patient's scans over time by RANO 2.0."""

import argparse
from pathlib import Path
from typing import List

from ..errors import GliomaSuiteError
from ..modalities import MODALITIES, is_segmentation
from ..outputs import check_output_folder
from ..progress import Progress
from .help import DEVICE_HELP, SEGMENTATION_MODEL_HELP


def add_parser(sub) -> None:
    p = sub.add_parser(
        "followup", help="register a patient's time points to the baseline, segment each, and judge the response "
                         "by RANO 2.0", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Each time point is a study folder (or DICOM folder), one image file (see --modality), or a "
                    "label map alone (a file whose name says seg/mask/label).\nOutputs in OUT: followup.json, "
                    "followup.csv, followup.png, segmentations/, registered/, transforms/, "
                    "recurrence/next_visit_probability.nii.gz.")
    p.add_argument("timepoints", nargs="+", metavar="TP", help="time points, in any order (sorted by date)")
    p.add_argument("-o", "--output", required=True, help="folder to write (must be new or empty, or --overwrite)")
    p.add_argument("--seg", nargs="+", metavar="LABELMAP",
                   help="the reader's label map for each time point, in the same order ('-' for none: segmented)")
    p.add_argument("--labels", default="auto", choices=["auto", "brats2021", "brats2023", "post-treatment", "binary"],
                   help="label convention of the given label maps (auto refuses when the values are ambiguous)")
    p.add_argument("--dates", nargs="+", metavar="YYYY-MM-DD",
                   help="scan date of each time point, same order (default: DICOM StudyDate, else the order given)")
    p.add_argument("--names", nargs="+", metavar="NAME",
                   help="a name for each time point, same order (default: file or folder names, else TP1, TP2, ...)")
    p.add_argument("--baseline", help="the baseline, by label or date (default: the first scan; RANO 2.0: the "
                                      "post-radiotherapy scan)")
    p.add_argument("--rt-end", metavar="YYYY-MM-DD", help="last day of radiotherapy: PD within 12 weeks is preliminary")
    p.add_argument("--idh", choices=["wildtype", "mutant"], help="IDH status: non-enhancing tumour counts if mutant")
    p.add_argument("--registration", default="rigid", choices=["rigid", "affine", "none"],
                   help="registration to the baseline (none: the time points are already on one grid)")
    p.add_argument("--modality", choices=list(MODALITIES),
                   help="what a time point given as one image file is, when its name does not say it")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"],
                   help=DEVICE_HELP)
    p.add_argument("--model", help=SEGMENTATION_MODEL_HELP)
    p.add_argument("--skip-brain-check", action="store_true", help="segment even if the brain check fails")
    p.add_argument("--no-recurrence", action="store_true",
                   help="skip the recurrence model (P(recurrence) for the latest scan and the next-visit map)")
    p.add_argument("--recurrence-model", metavar="NAME_OR_FILE",
                   help="recurrence model: a registered name (e.g. recurrence-sim-v1) or a weights file written by "
                        "train-recurrence (default: the shipped one)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing follow-up in OUT")
    p.set_defaults(func=run)


def timepoints_from_arguments(args) -> List:
    from ..followup.timepoints import TimePoint, parse_date, study_date_from_dicom

    paths = [Path(p) for p in args.timepoints]
    for option, values in (("--seg", args.seg), ("--dates", args.dates), ("--names", args.names)):
        if values is not None and len(values) != len(paths):
            raise GliomaSuiteError(f"{option} needs one value per time point: {len(paths)} time points, "
                                   f"{len(values)} {option} values (use '-' for a time point without one).")
    stems = [_stem(p) for p in paths]
    names = stems if len(set(stems)) == len(stems) else [f"TP{i + 1}" for i in range(len(paths))]
    if args.names:
        names = list(args.names)
    tps = []
    for i, path in enumerate(paths):
        if not path.exists():
            raise GliomaSuiteError(f"The time point {path} does not exist; check the path.")
        seg = None if not args.seg or args.seg[i] == "-" else Path(args.seg[i])
        source = path
        if path.is_file() and is_segmentation(path.name):
            if seg is not None:
                raise GliomaSuiteError(f"{path} is a label map, and --seg gives another for it; give one of the two.")
            source, seg = None, path
        elif path.is_file():
            source = {args.modality: path} if args.modality else [path]
        date = None
        if args.dates and args.dates[i] != "-":
            date = parse_date(args.dates[i])
        elif path.is_dir():
            date, _ = _dicom_date(path, study_date_from_dicom)
        tps.append(TimePoint(label=names[i], source=source, date=date, seg=seg))
    return tps


def _dicom_date(path, reader):
    try:
        return reader(path)
    except GliomaSuiteError:
        return None, None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def run(args, progress: Progress) -> dict:
    from ..followup.pipeline import compare_timepoints
    from ..followup.timepoints import parse_date

    out = check_output_folder(Path(args.output))
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise GliomaSuiteError(f"{out} already exists and is not empty; choose a new folder or pass --overwrite "
                               "(a follow-up you edited is never replaced silently).")
    tps = timepoints_from_arguments(args)
    rt_end = parse_date(args.rt_end) if args.rt_end else None
    result = compare_timepoints(tps, out, baseline=args.baseline, rt_end=rt_end, idh=args.idh,
                                label_convention=args.labels, registration=args.registration, device=args.device,
                                model=args.model, check_brain=not args.skip_brain_check,
                                recurrence=not args.no_recurrence, progress=progress.update,
                                note=progress.note, recurrence_model=args.recurrence_model)
    response = result["response"]
    if not progress.json_lines:
        for tp in result["timepoints"]:
            v = tp["volumes_cm3"]
            print(f"  {tp['label']:>12} {tp['date'] or '':>10}  ET {v['ET']:7.2f}  TC {v['TC']:7.2f}  WT {v['WT']:7.2f} cm3"
                  f"  SPD {tp['sum_of_products_mm2']:8.1f} mm2")
        print(response["sentence"])
        print(result["recurrence"]["sentence"])
        print(f"Results in {out / 'followup.json'}")
    recurrence = result["recurrence"]
    return {"output": str(out / "followup.json"), "category": response["category"],
            "preliminary": response["preliminary"], "sentence": response["sentence"],
            "recurrence_probability": recurrence.get("probability"), "recurrence_sentence": recurrence["sentence"]}
