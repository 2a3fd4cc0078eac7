"""A cohort on dask.distributed: one task per study, on a local cluster or an existing one.

:func:`run_cohort` checks everything it can before any work (the output folder, the models), then
computes each study's key (:func:`gliomasuite.batch.study.study_key`; several files are hashed at
once) and skips the studies whose finished result has the same key, as nnU-Net's
``--continue_prediction`` skips finished cases. The others become one task each
(:func:`run_study_task`, ``pure=False``), on a ``LocalCluster`` of ``workers`` processes started here,
or on the cluster whose scheduler is at ``scheduler`` (SLURM or PBS through dask-jobqueue,
Kubernetes, ``dask scheduler`` by hand). Results are collected as they complete; the cohort table is
rewritten after each (at most once a second) and at the end, so a run that is killed leaves a
readable table, and running the same command again resumes it. A study that failed with a problem
of its own (a corrupt file, a failed brain check) is remembered in ``errors.json`` with its key and not
run again until its inputs or the models change (or ``--retry-errors``).

Each local worker runs one study at a time (one Dask thread) with PyTorch, ONNX Runtime and ITK on
``threads_per_worker`` threads, and keeps its models loaded between studies. A study whose worker
dies (out of memory, a pre-empted job) is run again on another worker up to ``retries`` times, as
is one that fails with an unexpected exception; its output folder is written atomically, so a
death mid-study never leaves a partial or wrong result. A problem with a study itself (a corrupt
file, a missing modality) makes an error row at once and the cohort goes on.
"""

import json
import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..errors import GliomaSuiteError
from ..outputs import write_json_atomically
from .cohort import ERRORS_FILE, STUDIES_FOLDER, Cohort, CohortEntry, check_output, claim_output
from .study import (BrainCheckFailed, StudySettings, input_checksum, process_study, remove_leftovers,
                    run_fingerprint, stored_result, study_key, why_stale)
from .table import CohortTable, error_row, result_row

#: How long connecting to an existing scheduler may take before the run is refused.
CONNECT_TIMEOUT_S = 5
#: The cohort table is rewritten after a completed study at most this often (seconds), and at the end.
TABLE_INTERVAL_S = 1.0
#: Files hashed at once while computing the keys (hashlib releases the GIL on large reads).
HASH_THREADS = 4


@dataclass(frozen=True)
class ClusterSettings:
    workers: int = 1
    #: PyTorch/ONNX Runtime/ITK threads of each worker; None: the cores shared out (local: cores / workers;
    #: an existing cluster's worker: its cores / its Dask threads).
    threads_per_worker: Optional[int] = None
    scheduler: Optional[str] = None
    retries: int = 1


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ----------------------------------------------------------------------------------------------
# on the worker

_THREADS_SET: Optional[int] = None


def _configure_threads(threads: Optional[int], task_threads: int) -> int:
    """Set this process's PyTorch and ITK thread counts once (ONNX Runtime follows PyTorch's)."""
    global _THREADS_SET
    threads = threads or max(1, _cpus() // max(1, task_threads))
    if threads != _THREADS_SET:
        import SimpleITK as sitk
        import torch

        torch.set_num_threads(threads)
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
        _THREADS_SET = threads
    return threads


def run_study_task(entry: CohortEntry, out: str, settings: StudySettings, key: dict,
                   threads: Optional[int] = None) -> dict:
    """The Dask task of one study: its cohort-table row. Models stay loaded in the worker between tasks
    (:data:`gliomasuite.batch.study.MODELS`)."""
    try:
        from distributed import get_worker

        worker = get_worker()
        name, task_threads = str(worker.name), getattr(worker, "nthreads", 1)
    except (ImportError, ValueError):  # called outside a worker (tests, a debugger)
        name, task_threads = f"pid {os.getpid()}", 1
    _configure_threads(threads, task_threads)
    start = time.perf_counter()
    try:
        result = process_study(entry.study, Path(out) / STUDIES_FOLDER / entry.folder, entry.age, study_id=entry.id,
                               settings=settings, key=key)
    except BrainCheckFailed as exc:
        return error_row(entry, str(exc), exc.reasons, round(time.perf_counter() - start, 2), name)
    except GliomaSuiteError as exc:
        return error_row(entry, str(exc), elapsed=round(time.perf_counter() - start, 2), worker=name)
    return result_row(entry, result, "ok", round(time.perf_counter() - start, 2), name)


# ----------------------------------------------------------------------------------------------
# on the client


@contextmanager
def connect(cluster: ClusterSettings):
    """A Dask client: of the scheduler at ``cluster.scheduler``, or of a local cluster started (and
    closed on leaving) here."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise GliomaSuiteError("gliomasuite batch needs dask.distributed: install it with "
                               "pip install 'gliomasuite[batch]'.") from None
    if cluster.scheduler:
        try:
            client = Client(cluster.scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
        except OSError:  # refused, unreachable, or no answer in time
            raise GliomaSuiteError(
                f"No Dask scheduler answered at {cluster.scheduler} within {CONNECT_TIMEOUT_S} s; check the address "
                "(tcp://HOST:8786) and that the scheduler is running, or leave --scheduler out to run here.") from None
        except (ValueError, TypeError) as exc:
            raise GliomaSuiteError(f"{cluster.scheduler} is not a Dask scheduler address ({exc}); give one like "
                                   "tcp://HOST:8786.") from None
        with client:
            yield client
        return
    # Worker deaths count against the same retries as failures (the scheduler's allowed-failures).
    with dask.config.set({"distributed.scheduler.allowed-failures": cluster.retries}):
        with LocalCluster(n_workers=cluster.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=logging.ERROR) as local, Client(local) as client:
            yield client


def _describe_failure(exc: BaseException, retries: int) -> str:
    if type(exc).__name__ == "KilledWorker":
        return (f"the worker running this study died {retries + 1} time(s) (out of memory, or its job was ended); "
                "give each worker more memory, or fewer threads, and run the same command again")
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else 'no message'} (after {retries} retries)"


def _keys(cohort: Cohort, fingerprint: dict) -> dict:
    """Each processable study's key, or the error that computing it raised."""
    def one(entry):
        try:
            return study_key(input_checksum(entry.study), fingerprint, entry.age)
        except (OSError, GliomaSuiteError) as exc:
            return exc

    entries = [e for e in cohort.entries if e.problem is None]
    with ThreadPoolExecutor(HASH_THREADS) as pool:
        return dict(zip((e.id for e in entries), pool.map(one, entries)))


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _read_errors(out: Path) -> dict:
    try:
        return json.loads((out / ERRORS_FILE).read_text()).get("studies", {})
    except (OSError, ValueError, AttributeError):
        return {}


def run_cohort(cohort: Cohort, out, settings: StudySettings, cluster: ClusterSettings, *, overwrite: bool = False,
               retry_errors: bool = False, client=None, update: Callable[[float, str], None] = lambda f, m: None,
               note: Callable[[str], None] = lambda m: None) -> dict:
    """Process every study of ``cohort`` into ``out`` (see the module docstring); return a summary.

    A study that failed in an earlier run with a problem of its own (a corrupt file, a failed brain
    check) is not run again while its key is unchanged, unless ``retry_errors``: its error row is
    repeated from ``errors.json``. ``client``: an existing ``distributed.Client`` to use instead of
    connecting per ``cluster``. ``update(fraction, message)`` reports progress over the studies that
    need work.
    """
    start = time.perf_counter()
    out = Path(out)
    action = check_output(out, cohort, overwrite)
    fingerprint = run_fingerprint(settings, cohort.has_ages)  # an unknown model is refused before any work
    table = CohortTable(cohort.entries, cohort.extra_columns)
    keys = _keys(cohort, fingerprint)
    errors = _read_errors(out) if action == "resume" else {}
    todo, repeated = [], 0
    for entry in cohort.entries:
        key = keys.get(entry.id)
        if entry.problem or isinstance(key, Exception):
            table.set(entry, error_row(entry, _cap(entry.problem or str(key))))
            continue
        stored = stored_result(out / STUDIES_FOLDER / entry.folder) if action == "resume" else None
        if stored and (stored.get("key") or {}).get("sha256") == key["sha256"]:
            table.set(entry, result_row(entry, stored, "skipped"))
            continue
        failed = errors.get(entry.id) or {}
        if not retry_errors and failed.get("key") == key["sha256"]:
            table.set(entry, error_row(entry, failed.get("error", ""), failed.get("brain_check", ())))
            repeated += 1
            continue
        if stored:
            note(f"{entry.id}: processing it again, as {why_stale(stored, key)} since its last run.")
        todo.append((entry, key))
    skipped = len(cohort.entries) - len(todo)
    if skipped:
        note(f"{skipped} of {len(cohort.entries)} studies need no work (finished earlier, or an error row).")
    if repeated:
        note(f"{repeated} {'study' if repeated == 1 else 'studies'} failed in an earlier run with the same inputs "
             "and models and were not run again (the error rows repeat why); fix them, or pass --retry-errors.")

    threads = cluster.threads_per_worker
    if threads is None and not cluster.scheduler and client is None:
        threads = max(1, _cpus() // cluster.workers)
    workers = 0
    if todo:
        threading.Thread(target=table.preload_parquet, daemon=True).start()
        with (nullcontext(client) if client is not None else connect(cluster)) as dask_client:
            claim_output(out, cohort, action, note)
            remove_leftovers(out / STUDIES_FOLDER)
            table.write_csv(out)
            workers = len(dask_client.scheduler_info().get("workers", {}))
            _collect(dask_client, todo, out, settings, cluster.retries, threads, table, errors, update, note)
        write_json_atomically({"studies": errors}, out / ERRORS_FILE)  # without the studies that now succeeded
        remove_leftovers(out / STUDIES_FOLDER)  # staging folders of attempts whose worker died
    else:
        claim_output(out, cohort, action, note)
    csv_path = table.write_csv(out)
    parquet = table.write_parquet(out)
    if parquet is None:
        note("pyarrow is not installed, so only cohort.csv was written (pip install 'gliomasuite[batch]' for "
             "cohort.parquet).")
    counts = table.counts()
    return {"output": str(out), "table": str(csv_path), "parquet": str(parquet) if parquet else None,
            "studies": len(cohort.entries), "ok": counts.get("ok", 0), "skipped": counts.get("skipped", 0),
            "errors": counts.get("error", 0), "workers": workers, "elapsed_s": round(time.perf_counter() - start, 2)}


def _collect(client, todo, out: Path, settings: StudySettings, retries: int, threads: Optional[int],
             table: CohortTable, errors: dict, update, note) -> None:
    """Submit one task per study and fill the table as they complete. A study's own problem (an error row
    from its task) is kept in ``errors.json`` with its key; failures of the run itself are not."""
    from distributed import as_completed

    run = uuid.uuid4().hex[:8]
    keys = {entry.id: key["sha256"] for entry, key in todo}
    for entry, _ in todo:
        errors.pop(entry.id, None)
    futures = {client.submit(run_study_task, entry, str(out), settings, key, threads, pure=False, retries=retries,
                             key=f"study-{entry.folder}-{run}"): entry for entry, key in todo}
    update(0.0, f"Processing {len(todo)} studies")
    written, done, failed = 0.0, 0, 0
    try:
        for future in as_completed(futures):
            entry = futures.pop(future)
            try:
                row = future.result()
            except Exception as exc:  # retries spent: an unexpected failure, or the worker kept dying
                row = error_row(entry, _cap(_describe_failure(exc, retries)))
            else:
                if row["status"] == "error":
                    errors[entry.id] = {"key": keys[entry.id], "error": row["error"],
                                        "brain_check": [r for r in row["brain_check"].split("; ") if r]}
                    write_json_atomically({"studies": errors}, out / ERRORS_FILE)
            table.set(entry, row)
            done += 1
            if row["status"] == "error":
                failed += 1
                note(f"{entry.id}: {row['error']}")
            update(done / len(todo), f"{done}/{len(todo)} studies done ({failed} with errors); "
                                     f"{entry.id} {row['status']}")
            if time.monotonic() - written >= TABLE_INTERVAL_S or not futures:
                table.write_csv(out)
                written = time.monotonic()
    except KeyboardInterrupt:
        table.write_csv(out)
        note(f"Cancelled: the {done} studies finished are kept in {out}; run the same command again to resume.")
        raise
