"""Measure ``gliomasuite followup`` on the real longitudinal data, end to end, through the command line.

Every follow-up runs exactly as a user runs it: ``python -m gliomasuite --json-progress followup ...`` in
a child process (this checkout's ``GliomaSuite/`` first on ``PYTHONPATH``), into a temporary folder, and
the figures are read back from the ``followup.json`` it wrote. Prints a table per data set and writes
one JSON whose first entry is the command line that made it.

    GLIOMASUITE_DATA=../shared/data .venv/bin/python tools/evaluate_followup.py \
        [--out docs/followup-evaluation.json] [--registrations rigid none] [--patients 01 02] \
        [--threads 2] [--keep DIR]

Data (``$GLIOMASUITE_DATA/longitudinal``, see its README):

1. **TCIA Brain-Tumor-Progression**, 11 glioblastoma patients, a T1 post-contrast scan after
   chemoradiation (``Pre_``) and one at confirmed progression (``Post_``), each with the reader's binary
   tumour mask, dates from ``supplementary.csv``. Run from the masks: ``--seg Pre_Mask Post_Mask
   --labels binary --modality t1ce --dates initialDate endDate``, once per ``--registrations`` kind
   (rigid, the default of the command; none, since the pairs are supplied co-registered). All 11
   progressed clinically, so the count of PD calls is a sensitivity on real progression, not a
   specificity. The headers' spacing was reset to 1 mm by the re-packager: absolute mm, mm^2 and cm^3
   are not real (cm^3 here is voxels / 1000), relative changes are; and RANO's 10 mm measurability
   threshold is applied to these fake millimetres (10 pixels in plane), so which lesions count as
   measurable is not what a reader would find on the real scans. Our segmentation cannot run on these
   studies (T1 post-contrast only; the shipped models need T1ce and FLAIR at least): one patient is run
   without ``--seg`` to record the command's own refusal.
2. **UCSF-ALPTDG** label pairs (BraTS space, 1 mm), ``--labels post-treatment`` (BraTS 2024
   post-treatment: 1 non-enhancing core, 2 SNFH, 3 enhancing tissue, 4 resection cavity); each pair is
   also run with ``--labels auto`` to record what the command decides by itself (and whether that is
   what the core's own rule, ``detect_convention``, gives for the values in the files), and a pair with
   a 4 but no 3 (4 is a cavity in one convention and enhancing tumour in the other) with ``--labels
   brats2021`` too, the other possible reading. No dates: the first scan is the baseline.

``--threads`` sets ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``
in every child (the command has no thread option; torch and ONNX Runtime follow OpenMP's count).
Wall times are recorded per run for information only; on a shared machine they are noisy.
"""

import argparse
import csv
import datetime
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "GliomaSuite"))

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from gliomasuite import __version__  # noqa: E402

DEFAULT_OUT = REPO / "docs" / "followup-evaluation.json"
BTP = Path("longitudinal") / "brain-tumor-progression"
UCSF = Path("longitudinal") / "ucsf-alptdg-segs"
FAKE_MM = ("Brain-Tumor-Progression headers were reset to 1 mm spacing by the re-packager: absolute mm, mm2 and "
           "cm3 below are not real (cm3 = voxels / 1000), relative changes are; RANO's 10 mm measurability "
           "threshold was applied to these fake millimetres (10 pixels in plane), so which lesions are measurable "
           "differs from a reading of the real scans.")
NOT_SEGMENTED = ("Our segmentation cannot run on Brain-Tumor-Progression: each time point is one T1 post-contrast "
                 "scan, and the shipped models need T1ce and FLAIR at least; the follow-up ran from the readers' "
                 "masks (--seg). The command's own refusal, for one patient run without --seg, is recorded in "
                 "segmentation_refusal.")


# ----------------------------------------------------------------------------------------------
# running the command


def child_env(threads: int) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "GliomaSuite")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH")
                                                                      else []))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        env[name] = str(threads)
    return env


def run_followup(arguments, out_dir: Path, env: dict) -> dict:
    """One ``gliomasuite followup`` in a child process: exit status, notes, error, the followup.json."""
    command = [sys.executable, "-m", "gliomasuite", "--json-progress", "followup", *map(str, arguments),
               "-o", str(out_dir)]
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    events = []
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    error = next((e["message"] for e in events if e.get("event") == "error"), None)
    if proc.returncode != 0 and error is None:  # a crash, not a refusal: keep the traceback's end
        error = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
    run = {"command": shlex.join(["gliomasuite", *command[4:]]), "exit_status": proc.returncode,
           "wall_s": round(wall, 2), "error": error,
           "stderr_tail": proc.stderr.strip()[-2000:] if proc.returncode not in (0, 2) else None,
           "notes": [e["message"] for e in events if e.get("event") == "note"]}
    result_file = out_dir / "followup.json"
    run["result"] = json.loads(result_file.read_text()) if proc.returncode == 0 and result_file.is_file() else None
    return run


def summarise(run: dict) -> dict:
    """The figures of a two-time-point follow-up that the tables report."""
    out = {"exit_status": run["exit_status"], "error": run["error"], "wall_s": run["wall_s"],
           "command": run["command"]}
    result = run["result"]
    if result is None:
        return out
    base, follow = result["timepoints"][0], result["timepoints"][-1]
    response = result["response"]
    bidi, volu = response["bidimensional"], response["volumetric"]
    registration = follow["registration"] or {}

    def measurable(tp):
        return sum(bool(les["diameters"] and les["diameters"]["measurable"]) for les in tp["lesions"])

    out.update({
        "bidimensional": bidi["category"], "volumetric": volu["category"],
        "bidimensional_driver": bidi["driver"], "volumetric_driver": volu["driver"],
        "preliminary": response["preliminary"],
        "spd_baseline_mm2": base["sum_of_products_mm2"], "spd_followup_mm2": follow["sum_of_products_mm2"],
        "spd_change_percent": _round(bidi["enhancing"]["percent_from_baseline"]),
        "et_cm3": [base["volumes_cm3"]["ET"], follow["volumes_cm3"]["ET"]],
        "et_volume_change_percent": _round(follow["volume_change"]["ET"]["from_baseline_percent"]),
        "volumes_cm3": [base["volumes_cm3"], follow["volumes_cm3"]],
        "cavity_cm3": [base["cavity_cm3"], follow["cavity_cm3"]],
        "wt_volume_change_percent": _round(follow["volume_change"]["WT"]["from_baseline_percent"]),
        "lesions": [len(base["lesions"]), len(follow["lesions"])],
        "measurable_lesions": [measurable(base), measurable(follow)],
        "new_lesions": sum(les["status"] == "new" for les in follow["lesions"]),
        "new_measurable_lesions": len(bidi["new_lesions"]),
        "registration": registration.get("kind"),
        "registration_correlation": _round(registration.get("correlation"), 3),
        "registration_brain_dice": _round(registration.get("brain_dice"), 3),
        "registration_rotation_deg": _round(registration.get("rotation_angle_deg"), 2),
        "registration_translation_mm": ([round(v, 2) for v in registration["translation_mm"]]
                                        if registration.get("translation_mm") else None),
        "registration_warning": registration.get("warning"),
        "days_from_baseline": follow["days_from_baseline"],
        "label_convention": result["label_convention"],
        "sentence": response["sentence"],
        "volumetric_sentence": volu["sentence"],
        "notes": result["notes"],
    })
    return out


def _round(value, digits=1):
    return None if value is None else round(float(value), digits)


# ----------------------------------------------------------------------------------------------
# the data


def read_supplementary(path: Path) -> dict:
    """``id -> row`` of Brain-Tumor-Progression's supplementary.csv, ids as "01".."11".

    Tolerates what the file does or may do: comment lines (#), a byte-order mark, blanks after commas,
    commas escaped with a backslash inside a field (``[[1\\,22]\\,[21\\,22]]``), quoted fields, ids
    written 1, 01 or PGBM-01.
    """
    text = path.read_text(encoding="utf-8-sig")
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(lines)), escapechar="\\", skipinitialspace=True)
    rows = {}
    for row in reader:
        row = {(k or "").strip().strip('"').strip(): (v or "").strip().strip('"').strip() for k, v in row.items()
               if k is not None}
        digits = re.sub(r"\D", "", row.get("id", ""))
        if digits:
            rows[f"{int(digits):02d}"] = row
    return rows


def voxel_counts(path: Path) -> dict:
    values, counts = np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(values, counts) if v != 0}


def brain_tumor_progression(data: Path, work: Path, env: dict, registrations, patients) -> dict:
    root = data / BTP
    table = read_supplementary(root / "supplementary.csv")
    folders = sorted(p for p in root.glob("PGBM-*") if p.is_dir())
    if patients:
        folders = [f for f in folders if f.name.split("-")[-1] in patients]
    per_patient = {}
    for folder in folders:
        pid = folder.name.split("-")[-1]
        row = table.get(pid)
        if row is None:
            per_patient[folder.name] = {"error": f"no row for id {pid} in supplementary.csv"}
            continue
        pre, post = (voxel_counts(folder / f"{w}_Mask.nii.gz").get("1", 0) for w in ("Pre", "Post"))
        entry = {"initial_date": row["initialDate"], "end_date": row["endDate"],
                 "days": (datetime.date.fromisoformat(row["endDate"]) - datetime.date.fromisoformat(row["initialDate"])).days,
                 "supplementary_notes": row.get("notes") or None,
                 "mask_voxels": [pre, post],
                 "mask_voxel_change_percent": round(100.0 * (post - pre) / pre, 1) if pre else None,
                 "runs": {}}
        for kind in registrations:
            run = run_followup([folder / "Pre_Scan_T1.nii.gz", folder / "Post_Scan_T1.nii.gz",
                                "--seg", folder / "Pre_Mask.nii.gz", folder / "Post_Mask.nii.gz",
                                "--labels", "binary", "--modality", "t1ce",
                                "--dates", row["initialDate"], row["endDate"], "--registration", kind],
                               work / f"btp-{pid}-{kind}", env)
            summary = summarise(run)
            if run["result"] is not None:  # the reader's mask is the enhancing tumour: the volumes must agree
                summary["et_volume_matches_mask"] = (abs(summary["et_cm3"][0] - pre / 1000) < 1e-3
                                                     and abs(summary["et_cm3"][1] - post / 1000) < 1e-3)
            entry["runs"][kind] = summary
            print(f"  PGBM-{pid} {kind:6s} {summary.get('bidimensional', 'ERR')}/{summary.get('volumetric', 'ERR')}"
                  f" ({run['wall_s']:.1f} s){'  ' + run['error'] if run['error'] else ''}", flush=True)
        per_patient[folder.name] = entry

    # The segmentation path, as a user without masks would meet it.
    first = folders[0] if folders else None
    refusal = None
    if first is not None:
        row = table[first.name.split("-")[-1]]
        run = run_followup([first / "Pre_Scan_T1.nii.gz", first / "Post_Scan_T1.nii.gz", "--modality", "t1ce",
                            "--dates", row["initialDate"], row["endDate"]], work / "btp-segment", env)
        refusal = {"patient": first.name, "command": run["command"], "exit_status": run["exit_status"],
                   "message": run["error"], "output_written": (work / "btp-segment").exists()}

    counts = {}
    for kind in registrations:
        done = [e["runs"][kind] for e in per_patient.values() if e.get("runs", {}).get(kind, {}).get("bidimensional")]
        counts[kind] = {"patients_run": len(done),
                        "bidimensional_pd": sum(r["bidimensional"] == "PD" for r in done),
                        "volumetric_pd": sum(r["volumetric"] == "PD" for r in done),
                        "either_pd": sum("PD" in (r["bidimensional"], r["volumetric"]) for r in done),
                        "bidimensional_categories": _tally(r["bidimensional"] for r in done),
                        "volumetric_categories": _tally(r["volumetric"] for r in done)}
    return {"source": str(BTP), "patients": per_patient, "pd_counts": counts, "segmentation_refusal": refusal,
            "caveats": [FAKE_MM, NOT_SEGMENTED,
                        "All 11 patients progressed clinically (the Post_ scan is at confirmed progression): the "
                        "PD counts measure sensitivity on real progression, not specificity."]}


def ucsf_pairs(data: Path, work: Path, env: dict, patients) -> dict:
    root = data / UCSF
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if patients:
        folders = [f for f in folders if f.name in patients]
    per_patient = {}
    for folder in folders:
        pid = folder.name
        maps = [folder / f"{pid}_time{i}_seg.nii.gz" for i in (1, 2)]
        counts = [voxel_counts(m) for m in maps]
        values = sorted({int(v) for c in counts for v in c})
        entry = {"label_voxels": counts, "label_values": values,
                 "auto_should_read": _expected_auto(values), "runs": {}}
        readings = ["post-treatment", "auto"]
        if 4 in values and 3 not in values:  # 4 is a cavity or enhancing tumour: the other possible reading
            readings.append("brats2021")
        for reading in readings:
            entry["runs"][reading] = summarise(run_followup([*maps, "--labels", reading],
                                                            work / f"ucsf-{pid}-{reading}", env))
        auto = entry["runs"]["auto"]
        entry["auto_as_expected"] = (auto.get("label_convention") == entry["auto_should_read"] if auto["error"] is None
                                     else entry["auto_should_read"] == "refused")
        for reading, summary in entry["runs"].items():
            print(f"  {pid} {reading:14s} {summary.get('bidimensional', '-')}/{summary.get('volumetric', '-')}"
                  f"{'  refused: ' + summary['error'] if summary['error'] else ''}", flush=True)
        per_patient[pid] = entry
    return {"source": str(UCSF), "patients": per_patient,
            "caveats": ["No dates: the first scan (time1) is the baseline and days are unknown.",
                        "The data README says label codes differ between patients (1/2/4 or 1/2/3); the brief and "
                        "the command read them as BraTS 2024 post-treatment labels. A pair with values {2, 4} only "
                        "is ambiguous (4 = cavity or enhancing tumour): its brats2021 reading is given beside.",
                        "auto_should_read is what --labels auto should decide from the label values in the files "
                        "(the core's detect_convention applied to values this tool read); auto_as_expected compares "
                        "it with what the command did.",
                        "The enhancing volume is the reader's label count (1 mm voxels), in the time point's own "
                        "grid."]}


def _expected_auto(values) -> str:
    """What ``--labels auto`` should decide for these label values (the core's own rule, applied here to the
    values read from the files by this tool), or "refused" when they allow two readings."""
    from gliomasuite.errors import GliomaSuiteError
    from gliomasuite.followup.labelmaps import detect_convention

    try:
        return detect_convention(values)[0]
    except GliomaSuiteError:
        return "refused"


def _tally(values) -> dict:
    out = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


# ----------------------------------------------------------------------------------------------
# tables


def _f(value, spec="7.1f"):
    """``value`` formatted by ``spec`` (width.digits f), or a dash of the same width when it is None."""
    width = int(spec.split(".")[0])
    return format(value, spec) if isinstance(value, (int, float)) else "-".rjust(width)


def print_btp(section: dict, registrations) -> None:
    print("\nTCIA Brain-Tumor-Progression (masks given; mm/cm3 are fake 1 mm units, relative change is real)")
    head = f"{'patient':9s} {'days':>4s} {'vox%':>6s}"
    for kind in registrations:
        head += f" | {kind:5s} {'2D':>3s} {'vol':>3s} {'SPD0':>7s} {'SPD1':>7s} {'SPD%':>6s} {'ET%':>6s} {'corr':>5s}"
    print(head)
    for name, e in section["patients"].items():
        if "runs" not in e:
            print(f"{name:9s} {e.get('error')}")
            continue
        line = f"{name:9s} {e['days']:4d} {_f(e['mask_voxel_change_percent'], '6.1f')}"
        for kind in registrations:
            r = e["runs"][kind]
            if r.get("bidimensional") is None:
                line += f" | {kind:5s} error: {r['error']}"
                continue
            line += (f" | {'':5s} {r['bidimensional']:>3s} {r['volumetric']:>3s} {_f(r['spd_baseline_mm2'])}"
                     f" {_f(r['spd_followup_mm2'])} {_f(r['spd_change_percent'], '6.1f')}"
                     f" {_f(r['et_volume_change_percent'], '6.1f')} {_f(r['registration_correlation'], '5.2f')}")
        print(line)
    for kind, c in section["pd_counts"].items():
        print(f"registration {kind}: PD bidimensional {c['bidimensional_pd']}/{c['patients_run']}, volumetric "
              f"{c['volumetric_pd']}/{c['patients_run']} (2D {c['bidimensional_categories']}, "
              f"vol {c['volumetric_categories']})")
    refusal = section.get("segmentation_refusal")
    if refusal:
        print(f"segmenting instead ({refusal['patient']}, no --seg): exit {refusal['exit_status']}: {refusal['message']}")


def print_ucsf(section: dict) -> None:
    print("\nUCSF-ALPTDG label pairs (time1 baseline)")
    print(f"{'patient':8s} {'reading':14s} {'2D':>3s} {'vol':>3s} {'SPD0':>7s} {'SPD1':>7s} {'ET0':>7s} {'ET1':>7s}"
          f" {'WT0':>7s} {'WT1':>7s} {'cav0':>6s} {'cav1':>6s}")
    for pid, e in section["patients"].items():
        for reading, r in e["runs"].items():
            if r.get("bidimensional") is None:
                print(f"{pid:8s} {reading:14s} refused: {r['error'][:110]}")
                continue
            (v0, v1), (c0, c1) = r["volumes_cm3"], r["cavity_cm3"]
            print(f"{pid:8s} {reading:14s} {r['bidimensional']:>3s} {r['volumetric']:>3s} {_f(r['spd_baseline_mm2'])}"
                  f" {_f(r['spd_followup_mm2'])} {_f(v0['ET'], '7.2f')} {_f(v1['ET'], '7.2f')} {_f(v0['WT'], '7.2f')}"
                  f" {_f(v1['WT'], '7.2f')} {_f(c0, '6.2f')} {_f(c1, '6.2f')}"
                  + (f"  (read as {r['label_convention']})" if reading == "auto" else ""))
        if not e["auto_as_expected"]:
            auto = e["runs"]["auto"]
            print(f"{'':8s} ^ --labels auto should have {'refused' if e['auto_should_read'] == 'refused' else 'read ' + e['auto_should_read']}"
                  f" (values {e['label_values']}); it {'refused' if auto['error'] else 'read ' + auto['label_convention']}")


# ----------------------------------------------------------------------------------------------


def _git_state() -> dict:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return {"commit": head or None, "uncommitted_changes": bool(dirty)}
    except OSError:
        return {"commit": None, "uncommitted_changes": None}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("GLIOMASUITE_DATA"),
                        help="the shared data folder (default: $GLIOMASUITE_DATA)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="JSON to write (default: docs/followup-evaluation.json)")
    parser.add_argument("--registrations", nargs="+", default=["rigid", "none"], choices=["rigid", "affine", "none"],
                        help="registration kinds to run Brain-Tumor-Progression with")
    parser.add_argument("--patients", nargs="+", help="only these (Brain-Tumor-Progression ids 01..11, UCSF ids)")
    parser.add_argument("--skip", nargs="+", default=[], choices=["btp", "ucsf"], help="leave a data set out")
    parser.add_argument("--threads", type=int, default=2, help="threads of each child (OpenMP, ITK)")
    parser.add_argument("--keep", help="keep every follow-up output in this folder (default: a temporary one)")
    args = parser.parse_args(argv)
    if not args.data or not Path(args.data).is_dir():
        sys.exit("Set GLIOMASUITE_DATA (or --data) to the shared data folder (../shared/data).")
    data = Path(args.data)
    env = child_env(args.threads)
    invoked = [sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *argv]
    data_env = [f"GLIOMASUITE_DATA={os.environ['GLIOMASUITE_DATA']}"] if os.environ.get("GLIOMASUITE_DATA") else []
    report = {"command": shlex.join(data_env + invoked),
              "cwd": os.getcwd(), "data": str(data), "date": datetime.date.today().isoformat(),
              "git": _git_state(), "threads": args.threads,
              "timing_note": f"wall_s per run on {os.cpu_count()} CPU cores shared with other work: noisy, for "
                             "information only (Testing/benchmarks/bench_followup.py measures speed)."}
    report["gliomasuite_version"] = __version__
    with tempfile.TemporaryDirectory(prefix="evaluate-followup-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if "btp" not in args.skip:
            print("Brain-Tumor-Progression:", flush=True)
            report["brain_tumor_progression"] = brain_tumor_progression(data, work, env, args.registrations,
                                                                        args.patients)
        if "ucsf" not in args.skip:
            print("UCSF-ALPTDG:", flush=True)
            report["ucsf_alptdg"] = ucsf_pairs(data, work, env, args.patients)
    if "brain_tumor_progression" in report:
        print_btp(report["brain_tumor_progression"], args.registrations)
        print("\n" + FAKE_MM)
    if "ucsf_alptdg" in report:
        print_ucsf(report["ucsf_alptdg"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(f"\nWritten {out}")


if __name__ == "__main__":
    main()
