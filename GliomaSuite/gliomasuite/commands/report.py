"""``gliomasuite report STUDY -o OUT``: one patient's PDF, JSON and CSV report from the results already written."""

import argparse

from ..progress import Progress


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report", help="gather a study's segmentation, survival estimate and follow-up into a PDF, JSON and CSV "
                       "report (runs no model)", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The report reads what the other commands wrote: the label map (--seg, else the study "
                    "folder's own),\n`gliomasuite survival ... -o DIR` (--survival DIR) and `gliomasuite followup "
                    "... -o DIR` (--followup DIR).\nOutputs in OUT: report.pdf, report.json (fields in "
                    "docs/report-schema.md), report.csv, figures/;\nfor a study read from DICOM also "
                    "report-seg.dcm (DICOM SEG) and report-sr.dcm (TID 1500 SR), needing highdicom.")
    p.add_argument("study", nargs="+", metavar="STUDY", help="the study folder (NIfTI files or DICOM series), or its "
                                                            "image files")
    p.add_argument("-o", "--output", required=True, help="folder to write (must be new or empty, or --overwrite)")
    p.add_argument("--seg", metavar="LABELMAP", help="the study's BraTS label map (0, 1 NCR, 2 ED, 4 ET), on its grid; "
                                                     "default: the label map in the study folder")
    p.add_argument("--survival", metavar="DIR_OR_JSON", help="what `gliomasuite survival --seg/--study ... -o DIR` wrote")
    p.add_argument("--followup", metavar="FOLLOWUP_DIR", help="what `gliomasuite followup ... -o DIR` wrote")
    p.add_argument("--age", type=float, help="the patient's age in years (default: the survival estimate's)")
    p.add_argument("--deidentify", action="store_true",
                   help="leave out the patient's name, ID and birth date, the study's ID and dates, time point names "
                        "and paths; name the patient by a pseudonym (SHA-256 of the ID)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report in OUT")
    p.set_defaults(func=run)


def run(args, progress: Progress) -> dict:
    from ..report.pipeline import write_report

    study = args.study[0] if len(args.study) == 1 else list(args.study)
    result = write_report(study, args.output, seg=args.seg, survival=args.survival, followup=args.followup,
                          age=args.age, deidentify=args.deidentify, overwrite=args.overwrite,
                          progress=progress.update, note=progress.note)
    if not progress.json_lines:
        print(f"Report ({result['pages']} page{'s' if result['pages'] != 1 else ''}) in {result['pdf']}")
        if "dicom_seg" in result:
            print(f"DICOM SEG and SR in {result['dicom_seg']} and {result['dicom_sr']}")
    return result
