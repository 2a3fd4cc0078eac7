"""``gliomasuite batch COHORT -o OUT``: segment, measure and score every study of a cohort on Dask."""

import argparse
import sys
from pathlib import Path

from ..errors import GliomaSuiteError
from ..progress import Progress
from .help import DEVICE_HELP, SEGMENTATION_MODEL_HELP, SURVIVAL_MODEL_HELP


def add_parser(sub) -> None:
    p = sub.add_parser(
        "batch", help="segment, measure and (given ages) score every study of a cohort, on a local Dask cluster or "
                      "an existing one; a rerun resumes", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="COHORT is a folder of study folders (each as `gliomasuite segment` takes it), or a CSV manifest "
                    "with a\n`study` column (paths relative to the CSV's folder, or absolute) and optional `id` and "
                    "`age` columns;\nother columns are carried into the table. Outputs in OUT: cohort.csv, "
                    "cohort.parquet (one row per\nstudy), cohort.json, studies/ID/ (segmentation.nii.gz, result.json, "
                    "survival.json and .png with an age).\nRunning the same command again skips the studies already "
                    "done with the same inputs and models.")
    p.add_argument("cohort", metavar="COHORT", help="folder of study folders, or a CSV manifest")
    p.add_argument("-o", "--output", required=True, help="folder for the results (new, empty, or this cohort's)")
    p.add_argument("--workers", type=int, help="local worker processes, each running one study at a time (default 1)")
    p.add_argument("--threads-per-worker", type=int, metavar="T",
                   help="PyTorch/ONNX Runtime threads per worker (default: the cores shared out among the workers)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on the existing Dask cluster whose scheduler is at ADDRESS (tcp://HOST:8786) instead of "
                        "starting local workers")
    p.add_argument("--age-column", metavar="NAME", help="the manifest's age column (default: age, when present)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"],
                   help=DEVICE_HELP)
    p.add_argument("--engine", default="auto", choices=["auto", "torch", "onnxruntime"],
                   help="what runs the network on the CPU (auto: ONNX Runtime when installed, else PyTorch)")
    p.add_argument("--model", help=SEGMENTATION_MODEL_HELP)
    p.add_argument("--survival-model", help="for studies with an age: " + SURVIVAL_MODEL_HELP)
    p.add_argument("--skip-brain-check", action="store_true",
                   help="segment studies even if they do not look like skull-stripped brain MRI (by default such a "
                        "study is an error row)")
    p.add_argument("--retries", type=int, default=1,
                   help="how often a study is run again after its worker died or it failed unexpectedly (default 1)")
    p.add_argument("--retry-errors", action="store_true",
                   help="run again the studies that failed earlier with the same inputs (by default their error rows "
                        "are repeated without work)")
    p.add_argument("--overwrite", action="store_true", help="replace another cohort's results in OUT")
    p.set_defaults(func=run)


def run(args, progress: Progress) -> dict:
    from ..batch.cohort import read_cohort
    from ..batch.runner import ClusterSettings, run_cohort
    from ..batch.study import StudySettings

    for option, value, least in (("--workers", args.workers, 1), ("--threads-per-worker", args.threads_per_worker, 1),
                                 ("--retries", args.retries, 0)):
        if value is not None and value < least:
            raise GliomaSuiteError(f"{option} must be at least {least}; it is {value}.")
    if args.scheduler and args.workers is not None:
        raise GliomaSuiteError("--workers starts local workers; with --scheduler the cluster's own workers run the "
                               "studies: give one of the two.")
    from ..outputs import check_output_folder

    out = check_output_folder(Path(args.output))
    cohort = read_cohort(args.cohort, age_column=args.age_column, exclude=[out])
    settings = StudySettings(model=args.model, survival_model=args.survival_model, device=args.device,
                             engine=args.engine, check_brain=not args.skip_brain_check)
    cluster = ClusterSettings(workers=args.workers or 1, threads_per_worker=args.threads_per_worker,
                              scheduler=args.scheduler, retries=args.retries)
    # The per-study line with its ETA goes to stderr, so stdout keeps only the summary (JSON lines: stdout).
    bar = progress if progress.json_lines else Progress(stream=sys.stderr)
    summary = run_cohort(cohort, out, settings, cluster, overwrite=args.overwrite,
                         retry_errors=args.retry_errors, update=bar.update,
                         note=progress.note)
    if not progress.json_lines:
        print(f"{summary['studies']} studies: {summary['ok']} processed, {summary['skipped']} skipped (done earlier), "
              f"{summary['errors']} with errors; the table is in {summary['table']}"
              + (f" and {summary['parquet']}" if summary["parquet"] else ""))
    return summary
