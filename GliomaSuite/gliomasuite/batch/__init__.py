"""Cohort runs: ``gliomasuite batch`` segments, measures and scores many studies on dask.distributed.

* :mod:`.study` -- :func:`~.study.process_study`, the per-study pipeline (segment, measure, score,
  write atomically), and the checksum key a rerun compares to skip finished studies;
* :mod:`.cohort` -- reading a cohort (a folder of study folders or a CSV manifest) and claiming the
  output folder for it;
* :mod:`.table` -- the cohort table (``cohort.csv``, ``cohort.parquet``), one row per study;
* :mod:`.runner` -- the Dask side: a local cluster or an existing one, one task per study, results
  collected as they complete.

Only :mod:`.runner` needs dask (``pip install 'gliomasuite[batch]'``), and imports it when it runs.
"""
