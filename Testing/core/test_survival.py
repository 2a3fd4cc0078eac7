"""Tests for gliomasuite.survival: feature definitions, Cox JSON round trip, SOM, scoring, bad input.

Shapes with known answers check the feature definitions; the real label maps and the cohort table
in ``$GLIOMASUITE_DATA`` (skipped without it) check that our features reproduce the table the
shipped model was fitted on, and that the model beats age alone under cross-validation.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from gliomasuite import cli
from gliomasuite.errors import GliomaSuiteError
from gliomasuite.survival import cox, features, fit, score, som

MODELS = Path(__file__).resolve().parents[2] / "GliomaSuite" / "gliomasuite" / "models"
TABLE = "survival/brats2020_gt_shape_survival.csv"


def data_root() -> Path:
    root = os.environ.get("GLIOMASUITE_DATA")
    if not root:
        pytest.skip("GLIOMASUITE_DATA is not set (point it at ../shared/data to test on the real cohort)")
    if not (Path(root) / TABLE).exists():
        pytest.skip(f"{Path(root) / TABLE} is missing")
    return Path(root)


def ball(shape, centre, radius_mm, spacing=(1.0, 1.0, 1.0)):
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing)) <= radius_mm ** 2


def label_image(labels, spacing=(1.0, 1.0, 1.0), direction=None, origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(labels.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing[::-1]))  # numpy (z, y, x) -> ITK (x, y, z)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


def synthetic_cohort(n=120, seed=0):
    """Rows with the table's columns; hazard rises with age and core volume."""
    rng = np.random.RandomState(seed)
    age = rng.uniform(30, 85, n)
    wt = rng.lognormal(11.0, 0.5, n)
    tc = wt * rng.uniform(0.1, 0.5, n)
    et = tc * rng.uniform(0.3, 0.8, n)
    ncr = tc - et
    sph_wt, sph_tc = rng.uniform(0.3, 0.7, n), rng.uniform(0.4, 0.85, n)
    hazard = np.exp(0.05 * (age - 60) + 0.5 * np.log1p(tc / 1000) - 2.0 * sph_tc) / 300.0
    time = rng.exponential(1.0 / hazard)
    event = (rng.uniform(size=n) < 0.9).astype(int)
    return [{"subject_id": f"P{i:03d}", "age": age[i], "time_days": max(time[i], 1.0), "event": event[i],
             "WT_vol_mm3": wt[i], "TC_vol_mm3": tc[i], "ET_vol_mm3": et[i], "NCR_vol_mm3": ncr[i],
             "ED_vol_mm3": wt[i] - tc[i], "WT_sphericity": sph_wt[i], "TC_sphericity": sph_tc[i]}
            for i in range(n)]


def write_csv(path, rows, columns=None):
    columns = columns or list(rows[0])
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


# ---------------------------------------------------------------------------------------------
# features


def test_sphere_is_nearly_spherical_on_isotropic_and_anisotropic_grids():
    iso = features.region_shape(ball((50, 50, 50), (25, 25, 25), 18.0), (1.0, 1.0, 1.0))
    assert iso["vol_mm3"] == iso["voxels"]
    assert abs(iso["vol_mm3"] - 4 / 3 * math.pi * 18 ** 3) / iso["vol_mm3"] < 0.01
    # Marching cubes on a binary mask keeps part of the voxel staircase: its area exceeds 4 pi r^2 by
    # about 9% at every radius (measured for r = 5 to 45 mm), so a voxelised ball scores about 0.92.
    assert abs(iso["surf_mm2"] / (4 * math.pi * 18 ** 2) - 1.088) < 0.01
    assert 0.90 < iso["sphericity"] < 0.94
    assert iso["compactness"] == pytest.approx(iso["sphericity"] ** 3, rel=1e-12)
    assert iso["elongation"] == pytest.approx(1.0, abs=0.01) and iso["flatness"] == pytest.approx(1.0, abs=0.01)
    spacing = (2.5, 1.0, 0.8)  # the same ball in mm on an anisotropic grid
    aniso = features.region_shape(ball((24, 50, 60), (12, 25, 30), 18.0, spacing), spacing)
    assert aniso["vol_mm3"] == pytest.approx(aniso["voxels"] * 2.0)
    assert abs(aniso["vol_mm3"] - iso["vol_mm3"]) / iso["vol_mm3"] < 0.02
    # Thick slices keep more staircase (0.86 here): why features warn off a 1 mm isotropic grid.
    assert 0.82 < aniso["sphericity"] < 0.92
    assert aniso["elongation"] > 0.97 and aniso["flatness"] > 0.97


def test_box_elongation_and_flatness_have_the_exact_pca_values():
    mask = np.zeros((20, 30, 50), bool)
    mask[5:9, 5:15, 5:45] = True  # 4 x 10 x 40 voxels: variances (L^2 - 1) / 12 per axis
    shape = features.region_shape(mask, (1.0, 1.0, 1.0))
    assert shape["elongation"] == pytest.approx(math.sqrt((10 ** 2 - 1) / (40 ** 2 - 1)), rel=1e-12)
    assert shape["flatness"] == pytest.approx(math.sqrt((4 ** 2 - 1) / (40 ** 2 - 1)), rel=1e-12)
    # In millimetres: 2 mm slices make the same voxels a 8 x 10 x 40 mm box.
    thick = features.region_shape(mask, (2.0, 1.0, 1.0))
    assert thick["flatness"] == pytest.approx(math.sqrt(4 * (4 ** 2 - 1) / 12 / ((40 ** 2 - 1) / 12)), rel=1e-12)
    # Surface of a box by marching cubes: faces shrunk by half a voxel, edges bevelled, below 2(ab+bc+ca).
    assert 0.85 * 2 * (4 * 10 + 10 * 40 + 4 * 40) < shape["surf_mm2"] < 2 * (4 * 10 + 10 * 40 + 4 * 40)


def test_regions_empty_regions_and_bad_label_maps():
    labels = np.zeros((30, 30, 30), np.uint8)
    labels[ball(labels.shape, (15, 15, 15), 9)] = 2
    labels[ball(labels.shape, (15, 15, 15), 5)] = 1  # no enhancing tumour
    out = features.shape_features(labels, (1.0, 1.0, 1.0))
    assert list(out) == features.feature_columns()
    assert out["WT_voxels"] == out["TC_voxels"] + out["ED_voxels"] and out["TC_voxels"] == out["NCR_voxels"]
    assert out["ET_voxels"] == 0 and out["ET_vol_mm3"] == 0.0 and out["ET_surf_mm2"] == 0.0
    for name in ("sphericity", "compactness", "elongation", "flatness"):
        assert math.isnan(out[f"ET_{name}"]), "an empty region has no shape: NaN, never 0"
    with pytest.raises(GliomaSuiteError, match="no tumour"):
        features.shape_features(np.zeros((5, 5, 5), np.uint8), (1, 1, 1))
    labels[0, 0, 0] = 3
    with pytest.raises(GliomaSuiteError, match="relabel 3 to 4"):
        features.shape_features(labels, (1, 1, 1))


def test_hemisphere_follows_the_physical_left_right_axis():
    labels = np.zeros((20, 20, 40), np.uint8)
    labels[8:12, 8:12, 30:36] = 2  # high x index
    assert features.hemisphere(label_image(labels))["hemisphere"] == "left"  # LPS: +x is the patient's left
    flipped = label_image(labels, direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1))
    right = features.hemisphere(flipped)
    assert right["hemisphere"] == "right" and right["left_fraction"] == 0.0
    labels[:] = 0
    labels[8:12, 8:12, 18:22] = 4
    assert features.hemisphere(label_image(labels))["hemisphere"] == "midline"


def test_features_reproduce_the_cohort_table_on_real_label_maps():
    root = data_root()
    rows = {r["brats19_id"].replace("BraTS19_", "Brats18_"): r for r in csv.DictReader(open(root / TABLE))}
    cases = [c for c in ("Brats18_CBICA_ABM_1", "Brats18_TCIA02_135_1") if (root / "brats" / c).is_dir()]
    if not cases:
        pytest.skip("the BraTS 2018 cases shared with the cohort table are not in GLIOMASUITE_DATA/brats")
    for case in cases:
        ours = features.label_map_features(root / "brats" / case / f"{case}_seg.nii.gz")["shape"]
        for column in features.feature_columns():
            theirs = float(rows[case][column])
            # The table's surfaces are float32 (skimage's mesh); 1e-6 is float32 precision.
            assert ours[column] == pytest.approx(theirs, rel=1e-6), f"{case} {column}"


# ---------------------------------------------------------------------------------------------
# Cox model and SOM


def _matrix(rows, feats):
    return cox.design_matrix(rows, feats), np.array([r["time_days"] for r in rows]), np.array([r["event"] for r in rows])


def test_cox_json_round_trip_reproduces_lifelines_exactly():
    rows = synthetic_cohort(150)
    x, t, e = _matrix(rows, fit.FULL_FEATURES)
    model, cph = cox.fit_cox(x, t, e, fit.FULL_FEATURES, penalizer=0.1, return_lifelines=True)
    loaded = cox.CoxModel(json.loads(json.dumps(model.to_json())))
    z = (x - loaded.means) / loaded.sds
    frame = cox._frame(z, [f["name"] for f in fit.FULL_FEATURES])
    times = np.array([1.0, 30.0, 182.6, 365.25, 700.0, 1e5])
    np.testing.assert_allclose(loaded.partial_hazard(x), cph.predict_partial_hazard(frame).to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(loaded.survival(x, times), cph.predict_survival_function(frame, times).to_numpy(),
                               rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(loaded.survival(x), cph.predict_survival_function(frame).to_numpy(), rtol=1e-12)
    np.testing.assert_array_equal(loaded.median(x), cph.predict_median(frame).to_numpy())
    s, lower, upper = loaded.survival_band(x[:5], times[:5])
    assert np.all(lower <= s + 1e-15) and np.all(s <= upper + 1e-15)


def test_som_nodes_keep_members_events_and_km_curves():
    rows = synthetic_cohort(80)
    x, t, e = _matrix(rows, fit.REDUCED_FEATURES)
    z = (x - x.mean(0)) / x.std(0, ddof=1)
    fitted = som.fit_som(z, t, e, [r["subject_id"] for r in rows], iterations=500, seed=3)
    again = som.SurvivalSOM(json.loads(json.dumps(fitted.to_json())))
    nodes = again.data["nodes"]
    assert len(nodes) == 100 and sum(nd["n"] for nd in nodes) == 80
    assert sum(nd["events"] for nd in nodes) == int(e.sum())
    for i in (0, 17, 55):
        node = again.node(*again.bmu(z[i]))
        assert i in node["members"] and rows[i]["subject_id"] in node["subject_ids"]
        assert node["neighbourhood"]["n"] >= 15
    refit = som.fit_som(z, t, e, iterations=500, seed=3)
    np.testing.assert_array_equal(refit.weights, fitted.weights)  # seeded


def test_kaplan_meier_matches_lifelines():
    from lifelines import KaplanMeierFitter

    rows = synthetic_cohort(60, seed=4)
    t = np.round([r["time_days"] for r in rows])
    e = np.array([r["event"] for r in rows])
    ours = som.kaplan_meier(t, e)
    kmf = KaplanMeierFitter().fit(t, e)
    np.testing.assert_allclose(ours["survival"], kmf.survival_function_.iloc[:, 0].to_numpy(), rtol=1e-12)
    ci = kmf.confidence_interval_.to_numpy()
    np.testing.assert_allclose(ours["lower"][1:], ci[1:, 0], rtol=1e-9)
    np.testing.assert_allclose(ours["upper"][1:], ci[1:, 1], rtol=1e-9)
    assert ours["median"] == kmf.median_survival_time_


def test_fit_cohort_model_on_a_small_synthetic_table(tmp_path):
    table = write_csv(tmp_path / "cohort.csv", synthetic_cohort(90))
    result = fit.fit_cohort_model(table, name="tiny", folds=3, repeats=1, grid=(0.1,), som_iterations=300)
    for variant in ("full", "reduced"):
        m = result[variant]
        assert m["variant"] == variant and m["validation"]["cv_cindex"]["folds"] == 3
        assert 0.0 <= m["validation"]["calibration_12_months"]["mean_abs_difference"] <= 1.0
        assert {t["feature"] for t in m["assumptions"]["tests"]} == {f["name"] for f in m["cox"]["features"]}
    paths = fit.write_models(result, tmp_path / "models", "tiny")
    text = Path(paths["full"]).read_text()
    assert json.loads(text)["cox"]["format_version"] == cox.FORMAT_VERSION and "NaN" not in text
    full, reduced = score.load_models(paths["full"])
    assert full.variant == "full" and reduced.variant == "reduced"


def test_cross_validated_cindex_beats_age_alone_on_the_real_cohort():
    root = data_root()
    args = dict(grid=(0.3,), folds=5, repeats=1, seed=0)
    x, t, e, _, _ = fit.read_cohort(root / TABLE, fit.FULL_FEATURES)
    full = cox.nested_cv(x, t, e, fit.FULL_FEATURES, **args)
    age = cox.nested_cv(x[:, :1], t, e, fit.AGE_ONLY, **args)
    assert full["cindex_mean"] > age["cindex_mean"] + 0.02
    assert full["cindex_mean"] > 0.64


def test_shipped_models_are_plain_json_with_their_card():
    for name in ("survival-brats2020-v1", "survival-brats2020-v1-reduced"):
        data = json.loads((MODELS / f"{name}.json").read_text())
        assert data["format"] == cox.FORMAT and data["format_version"] == cox.FORMAT_VERSION
        assert data["cohort"]["n"] == 236
    card = (MODELS / "survival-brats2020-v1.md").read_text()
    full = score.SurvivalModel.load()
    assert f"{full.cv_cindex:.3f}" in card and "gliomasuite fit-survival" in card


# ---------------------------------------------------------------------------------------------
# scoring


def test_scoring_a_row_gives_monotone_curves_in_0_1_and_readable_numbers():
    full, reduced = score.load_models()
    row = synthetic_cohort(1, seed=7)[0]
    result = score.score_features(row, full, reduced)
    assert result["model"]["variant"] == "full"
    c = result["curve"]
    for key in ("survival", "lower", "upper"):
        values = np.asarray(c[key])
        assert np.all((values >= 0) & (values <= 1)) and np.all(np.diff(values) <= 1e-15)
    assert np.all(np.asarray(c["lower"]) <= np.asarray(c["survival"]) + 1e-12)
    assert np.all(np.asarray(c["survival"]) <= np.asarray(c["upper"]) + 1e-12)
    p = [result["p_alive"][str(m)]["p"] for m in (6, 12, 18, 24)]
    assert p == sorted(p, reverse=True)
    assert result["risk_group"] in ("low", "intermediate", "high")
    assert result["brats_class"] in score.BRATS_CLASSES
    assert "months" in result["sentence"] and "C-index" in result["sentence"]
    older = score.score_features(dict(row, age=row["age"] + 15), full, reduced)
    assert older["risk_score"] > result["risk_score"]  # age is the strongest known risk factor


def test_table_scoring_full_and_reduced_paths(tmp_path):
    rows = synthetic_cohort(6, seed=9)
    full_csv = write_csv(tmp_path / "full.csv", rows)
    assert cli.main(["survival", "--table", str(full_csv), "-o", str(tmp_path / "full_out.csv")]) == 0
    out = list(csv.DictReader(open(tmp_path / "full_out.csv")))
    assert {r["model"] for r in out} == {"survival-brats2020-v1"} and out[0]["subject_id"] == "P000"
    # The table names the SOM node as the words and plots do: row,column counted from 1.
    full, reduced = score.load_models()
    one = score.score_features(rows[0], full, reduced)
    assert out[0]["som_node"] == one["som"]["node_label"] == f"{one['som']['node'][0] + 1},{one['som']['node'][1] + 1}"
    assert f"node {one['som']['node_label']}" in one["sentence"]
    volumes = ["subject_id", "age", "WT_vol_mm3", "TC_vol_mm3", "ET_vol_mm3", "NCR_vol_mm3", "ED_vol_mm3"]
    rows[2]["age"] = ""  # one row without an age: not scored, and said so
    reduced_csv = write_csv(tmp_path / "volumes.csv", rows, volumes)
    summary = score.score_table(reduced_csv, tmp_path / "reduced_out.csv")
    assert summary["model"] == "survival-brats2020-v1-reduced" and "reduced model" in summary["why"]
    out = list(csv.DictReader(open(tmp_path / "reduced_out.csv")))
    assert {r["model"] for r in out} == {"survival-brats2020-v1-reduced"}
    assert out[2]["risk_score"] == "" and "age is missing" in out[2]["note"]
    assert all(0 <= float(r["p_alive_12m"]) <= 1 for i, r in enumerate(out) if i != 2)
    assert summary["scored"] == 5 and summary["not_scored"] == 1


def test_bad_table_inputs_are_refused_with_the_reason(tmp_path, capsys):
    rows = synthetic_cohort(3, seed=2)
    renamed = [{("WT_volume" if k == "WT_vol_mm3" else k): v for k, v in r.items()} for r in rows]
    bad = write_csv(tmp_path / "renamed.csv", renamed)
    assert cli.main(["survival", "--table", str(bad), "-o", str(tmp_path / "o.csv")]) == cli.EXIT_USER_ERROR
    message = capsys.readouterr().err
    assert "lacks the column(s) WT_vol_mm3" in message and "WT_volume" in message
    assert not (tmp_path / "o.csv").exists()
    for r in rows:
        r["age"] = 150
    with pytest.raises(GliomaSuiteError, match="outside the valid range"):
        score.score_table(write_csv(tmp_path / "old.csv", rows), tmp_path / "o.csv")
    full, reduced = score.load_models()
    nan_row = dict(synthetic_cohort(1)[0], TC_sphericity=float("nan"))
    fallback = score.score_features(nan_row, full, reduced)  # a core without shape: reduced model, said so
    assert fallback["model"]["variant"] == "reduced" and "TC_sphericity" in fallback["model"]["why"]
    with pytest.raises(GliomaSuiteError, match="TC_vol_mm3 is missing"):
        score.score_features(dict(nan_row, TC_vol_mm3=None), full, reduced)
    with pytest.raises(GliomaSuiteError, match="age is missing"):
        score.score_features(dict(nan_row, age=None), full, reduced)


def test_one_patient_from_a_label_map_writes_json_and_png(tmp_path, capsys):
    labels = np.zeros((60, 80, 80), np.uint8)
    labels[ball(labels.shape, (30, 40, 55), 16)] = 2
    labels[ball(labels.shape, (30, 40, 55), 9)] = 4
    labels[ball(labels.shape, (30, 40, 55), 5)] = 1
    seg = tmp_path / "seg.nii.gz"
    sitk.WriteImage(label_image(labels), str(seg))
    out = tmp_path / "patient"
    assert cli.main(["survival", "--seg", str(seg), "--age", "63", "-o", str(out)]) == 0
    result = json.loads((out / "survival.json").read_text())
    assert result["model"]["variant"] == "full" and result["location"]["hemisphere"] == "left"
    assert result["inputs"]["age"] == 63 and result["features"]["ET_voxels"] > 0
    assert (out / "survival.png").read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["survival", "--seg", str(seg), "-o", str(tmp_path / "x")]) == cli.EXIT_USER_ERROR
    assert "age is missing" in capsys.readouterr().err
    assert cli.main(["survival", "--seg", str(seg), "--age", "7", "-o", str(tmp_path / "x")]) == cli.EXIT_USER_ERROR
    assert "outside the valid range" in capsys.readouterr().err
    sitk.WriteImage(label_image(np.zeros_like(labels)), str(tmp_path / "empty.nii.gz"))
    assert cli.main(["survival", "--seg", str(tmp_path / "empty.nii.gz"), "--age", "63", "-o",
                     str(tmp_path / "y")]) == cli.EXIT_USER_ERROR
    assert "contains no tumour" in capsys.readouterr().err


def test_shipped_model_is_the_lifelines_fit_of_the_real_cohort():
    root = data_root()
    shipped = score.SurvivalModel.load()
    x, t, e, _, _ = fit.read_cohort(root / TABLE, fit.FULL_FEATURES)
    assert shipped.cohort["table_sha256"] == fit._sha256(root / TABLE)
    _, cph = cox.fit_cox(x, t, e, fit.FULL_FEATURES, shipped.cox.data["penalizer"], return_lifelines=True)
    frame = cox._frame(shipped.cox.standardise(x), [f["name"] for f in fit.FULL_FEATURES])
    times = [182.6, 365.25, 730.5]
    np.testing.assert_allclose(shipped.cox.survival(x, times), cph.predict_survival_function(frame, times).to_numpy(),
                               rtol=1e-9)


def test_fit_survival_writes_models_card_and_plots_together_and_refuses_to_replace_them(tmp_path):
    table = data_root() / TABLE
    out = tmp_path / "fitted"
    args = ["fit-survival", "--table", str(table), "--out", str(out), "--name", "mine", "--folds", "2", "--repeats",
            "1", "--som-iterations", "200"]
    assert cli.main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["mine-calibration.png", "mine-reduced-calibration.png",
                                                     "mine-reduced.json", "mine.json", "mine.md"]
    assert score.SurvivalModel.load(out / "mine.json").name == "mine"
    assert "gliomasuite fit-survival" in (out / "mine.md").read_text()
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / "mine.json").unlink()  # a file left by hand: the card and plots are still there and are not replaced
    assert cli.main(args) == 2
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == {k: v for k, v in before.items() if k != "mine.json"}
