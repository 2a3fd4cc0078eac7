"""Benchmark: studies per hour of a shell loop of ``gliomasuite segment`` against ``gliomasuite batch``.

Not a test: run it by hand (it needs GLIOMASUITE_DATA and the shipped model; a few minutes).

    GLIOMASUITE_DATA=../shared/data .venv/bin/python Testing/benchmarks/bench_batch.py \\
        [--cases 6] [--threads 2] [--output FILE.json]

The same ``--cases`` real BraTS cases (the first ones of ``$GLIOMASUITE_DATA/brats``, symlinked into one
cohort folder), in the same run, three ways, each with ``--threads`` CPU threads in all:

1. **loop**: one ``gliomasuite segment CASE -o CASE.nii.gz`` process per study, one after the other, as
   users script it today (``OMP_NUM_THREADS`` etc. set to ``--threads``): every study pays the
   interpreter start, the imports and the model loading;
2. **batch, 1 worker**: ``gliomasuite batch COHORT -o OUT --workers 1 --threads-per-worker THREADS``;
3. **batch, 2 workers**: ``--workers 2 --threads-per-worker THREADS/2`` (at least 1).

Each is timed as a whole process (or the loop as a whole), from its start to its exit, cluster start
and shutdown included (``studies_per_hour``). For ``batch`` also with warm workers, the target's terms
(``warm_studies_per_hour``): the studies finished after each worker's first (which pays the model
loading), over the time from that point to the last, taken from the JSON progress lines as they arrive;
it is the rate a long cohort approaches, where the start-up is shared by hundreds of studies. ``batch`` also measures and scores nothing more than ``segment`` does beyond
the tumour features (no ages are given), so the comparison is segmentation against segmentation.
Peak resident memory: of each ``segment`` child from ``os.wait4``; of each batch worker by sampling
the batch process's descendants with psutil every 0.2 s (installed with dask.distributed), keeping
each one's largest RSS (the workers are the large ones), and the batch process's own (the driver).
The JSON goes to ``--output`` (default stdout; the summary then goes to stderr).
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

try:  # never collected (bench_*.py is not a test file name); marked as what it is should pytest be pointed at it
    import pytest

    pytestmark = pytest.mark.benchmark
except ImportError:  # pragma: no cover - the benchmark itself does not need pytest
    pass

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")


def child_env(threads: int) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "GliomaSuite")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH")
                                                                      else []))
    for name in THREAD_VARIABLES:
        env[name] = str(threads)
    return env


def gliomasuite(*arguments) -> list:
    return [sys.executable, "-m", "gliomasuite", *map(str, arguments)]


def run_child(command, env, log: Path, sample_descendants: bool = False, done_times: list = None) -> dict:
    """One child process timed from start to exit; its peak RSS from wait4, and optionally each descendant's.
    ``done_times``: filled with the seconds from start at which each study finished, read from the child's
    JSON progress lines (``--json-progress``) as they arrive."""
    peaks = {}
    with open(log, "w") as stream:
        start = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE if done_times is not None else stream,
                                stderr=subprocess.STDOUT, cwd=REPO, text=True)
        stop = threading.Event()
        sampler = reader = None
        if sample_descendants:
            sampler = threading.Thread(target=_sample, args=(proc.pid, peaks, stop), daemon=True)
            sampler.start()
        if done_times is not None:
            reader = threading.Thread(target=_read_progress, args=(proc.stdout, stream, start, done_times), daemon=True)
            reader.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        stop.set()
        if sampler:
            sampler.join()
        if reader:
            reader.join()
    # wait4's ru_maxrss is the largest of the child and the descendants it reaped (a batch's workers).
    run = {"exit_status": proc.returncode, "wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
           "cpu_s": round(usage.ru_utime + usage.ru_stime, 1)}
    if sample_descendants:
        run["driver_peak_rss_mb"] = round(peaks.pop(proc.pid, 0) / 2 ** 20, 1)
        run["descendants_peak_rss_mb"] = sorted((round(v / 2 ** 20, 1) for v in peaks.values()), reverse=True)
    if proc.returncode != 0:
        run["log_tail"] = log.read_text()[-2000:]
    return run


def _read_progress(pipe, log, start: float, done_times: list) -> None:
    """Copy the child's output to ``log``; note when each "N/M studies done" progress line arrived."""
    for line in pipe:
        log.write(line)
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "progress" and " studies done" in record.get("message", ""):
            done_times.append(round(time.perf_counter() - start, 3))


def _sample(pid: int, peaks: dict, stop: threading.Event) -> None:
    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.Error:
        return
    while not stop.is_set():
        try:
            children = [parent] + parent.children(recursive=True)
        except psutil.Error:
            break
        for child in children:
            try:
                peaks[child.pid] = max(peaks.get(child.pid, 0), child.memory_info().rss)
            except psutil.Error:
                pass
        stop.wait(0.2)


def per_hour(studies: int, seconds: float) -> float:
    return round(studies * 3600.0 / seconds, 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6, help="how many real BraTS cases")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads in all, for each of the three ways")
    parser.add_argument("--output", help="JSON to write (default: stdout)")
    args = parser.parse_args(argv)
    data = os.environ.get("GLIOMASUITE_DATA")
    if not data or not (Path(data) / "brats").is_dir():
        sys.exit("Set GLIOMASUITE_DATA to the shared data folder (it holds the real BraTS cases).")
    cases = sorted(p for p in (Path(data) / "brats").iterdir() if p.is_dir())[:args.cases]
    log = sys.stderr if not args.output else sys.stdout
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        cohort = work / "cohort"
        for case in cases:
            (cohort / case.name).mkdir(parents=True)
            for source in case.iterdir():
                (cohort / case.name / source.name).symlink_to(source)

        loop, start = [], time.perf_counter()
        for case in cases:
            loop.append(run_child(gliomasuite("segment", cohort / case.name, "-o", work / "loop" / f"{case.name}.nii.gz"),
                                  child_env(args.threads), work / f"loop-{case.name}.log"))
            print(f"loop: {case.name} {loop[-1]['wall_s']} s", file=log)
        loop_wall = time.perf_counter() - start

        batches = {}
        for workers in (1, 2):
            threads = max(1, args.threads // workers)
            done_times = []
            run = run_child(gliomasuite("--json-progress", "batch", cohort, "-o", work / f"batch{workers}",
                                        "--workers", workers, "--threads-per-worker", threads),
                            child_env(args.threads), work / f"batch{workers}.log", sample_descendants=True,
                            done_times=done_times)
            rows = _rows(work / f"batch{workers}" / "cohort.csv")
            run.update(workers=workers, threads_per_worker=threads, ok=sum(r["status"] == "ok" for r in rows),
                       per_study_s=[float(r["elapsed_s"]) for r in rows if r["elapsed_s"]],
                       worker_peak_rss_mb=run["descendants_peak_rss_mb"][:workers],
                       studies_per_hour=per_hour(len(cases), run["wall_s"]), study_done_at_s=done_times)
            if len(done_times) > workers:  # warm: after each worker's first study (which loads the model)
                run["warm_studies_per_hour"] = per_hour(len(done_times) - workers, done_times[-1] - done_times[workers - 1])
            batches[f"batch_{workers}_worker{'s' if workers > 1 else ''}"] = run
            print(f"batch, {workers} worker(s): {run['wall_s']} s, {run['ok']} ok", file=log)

        result = {
            "benchmark": "bench_batch", "cases": [c.name for c in cases], "threads": args.threads,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "loop": {"wall_s": round(loop_wall, 2), "studies_per_hour": per_hour(len(cases), loop_wall),
                     "ok": sum(r["exit_status"] == 0 for r in loop),
                     "per_study_wall_s": [r["wall_s"] for r in loop],
                     "peak_rss_mb_max": max(r["peak_rss_mb"] for r in loop), "runs": loop},
            **batches,
        }
        summary = [f"{len(cases)} studies, {args.threads} threads in all:",
                   f"  loop of segment: {result['loop']['studies_per_hour']:7.1f} studies/h "
                   f"({loop_wall:.1f} s; peak RSS per process {result['loop']['peak_rss_mb_max']} MB)"]
        for name, run in batches.items():
            mean = sum(run["per_study_s"]) / max(1, len(run["per_study_s"]))
            summary.append(f"  {name:>15}: {run['studies_per_hour']:7.1f} studies/h ({run['wall_s']} s; warm workers "
                           f"{run.get('warm_studies_per_hour')} studies/h; {mean:.1f} s "
                           f"per study in a worker; peak RSS per worker {run['worker_peak_rss_mb']} MB, driver "
                           f"{run['driver_peak_rss_mb']} MB)")
        text = json.dumps(result, indent=1)
        if args.output:
            Path(args.output).write_text(text + "\n")
        else:
            print(text)
        print("\n".join(summary), file=sys.stderr if not args.output else sys.stdout)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _rows(path: Path) -> list:
    import csv

    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


if __name__ == "__main__":
    main()
