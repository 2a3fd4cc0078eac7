"""Survival from tumour shape and age: features, Cox model, self-organising map, scoring, plots.

* :mod:`.features` — shape features of a BraTS label map with the cohort table's exact definitions
  (volume, marching-cubes surface, sphericity, compactness, elongation, flatness per WT, TC, ET,
  NCR, ED) and the tumour's hemisphere.
* :mod:`.cox` — lifelines Cox model fitting (penalty by cross-validated C-index, proportional-hazards
  check) and numpy-only prediction from plain versioned JSON.
* :mod:`.som` — 10 x 10 self-organising map (minisom) with each node's members and Kaplan-Meier curve.
* :mod:`.fit` — ``fit_cohort_model(table_csv)``: the full and the reduced (age + volumes) model with
  their cross-validated performance.
* :mod:`.score` — scoring a table row, a features dict or a label map into numbers and words.
* :mod:`.plot` — the patient's curve against the cohort and the SOM cluster, and calibration plots.

Fitting needs lifelines and minisom (the ``survival`` extra); scoring a shipped model needs only numpy
(and scikit-image + SimpleITK to compute features from a label map).
"""
