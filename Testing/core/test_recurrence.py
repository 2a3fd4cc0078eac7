"""The recurrence model's parts: the growth simulator's physics, the simulated series, the network and its
file, the refusals of the inference, and training with resume.

The solver is checked against closed forms (the logistic solution, no flux into CSF, the Fisher-KPP
front speed 2 sqrt(D rho)); the simulator on real BraTS baselines when GLIOMASUITE_DATA is set.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from gliomasuite.errors import GliomaSuiteError
from gliomasuite.recurrence import simulate as S
from gliomasuite.recurrence.inference import Visit, load_recurrence_model, predict_recurrence, recurrence_entry
from gliomasuite.recurrence.inputs import series_inputs
from gliomasuite.recurrence.network import ConvGRUCell, RecurrenceNet
from gliomasuite.recurrence.weights import load_recurrence_weights, save_recurrence_weights
from gliomasuite.registry import MODELS_DIR

DATA = Path(os.environ["GLIOMASUITE_DATA"]) if os.environ.get("GLIOMASUITE_DATA") else None
needs_data = pytest.mark.skipif(DATA is None or not (DATA / "brats").is_dir(),
                                reason="needs GLIOMASUITE_DATA (the real BraTS baselines)")


# ---------------------------------------------------------------------------------------------
# the physics


def test_reaction_alone_follows_the_logistic_solution():
    c0, rho, days = 0.01, 0.05, 120.0
    solver = S.FisherKolmogorov(np.zeros((4, 4, 4), np.float32), rho)
    c = solver.run(np.full((4, 4, 4), c0, np.float32), days)
    exact = c0 * np.exp(rho * days) / (1 + c0 * (np.exp(rho * days) - 1))
    assert np.allclose(c, exact, rtol=1e-4)


def test_diffusion_keeps_the_mass_and_never_enters_csf():
    tissue = np.full((10, 10, 20), 3, np.uint8)
    tissue[:, :, 10] = 1  # a CSF wall across the grid
    d = S.diffusion_map(tissue, 1.0)
    assert d[0, 0, 0] == 1.0 and d[0, 0, 10] == 0.0
    grey = S.diffusion_map(np.full((2, 2, 2), 2, np.uint8), 1.0)
    assert np.allclose(grey, S.GREY_TO_WHITE)  # D_grey = D_white / 10
    c = np.zeros(tissue.shape, np.float32)
    c[4:6, 4:6, 2:4] = 1.0
    out = S.FisherKolmogorov(d, 0.0).run(c, 200.0)
    assert out.sum() == pytest.approx(c.sum(), rel=1e-4)
    assert out[:, :, 10:].max() == 0.0 and out[:, :, :10].min() > 0


def test_the_front_travels_at_two_root_d_rho():
    d_mm2, rho = 1.0, 0.05
    shape = (3, 3, 150)
    c = np.zeros(shape, np.float32)
    c[:, :, :5] = 1.0
    solver = S.FisherKolmogorov(np.full(shape, d_mm2, np.float32), rho)

    def front(a):  # position (mm) where the density crosses 0.5
        profile = a[1, 1]
        return float(np.argmax(profile < 0.5)) * S.GRID_MM

    c = solver.run(c, 200.0)
    x1 = front(c)
    c = solver.run(c, 200.0)
    speed = (front(c) - x1) / 200.0
    # The front reaches 2 sqrt(D rho) from below, slower by 3/(2t) sqrt(D/rho) at time t (Bramson 1983).
    expected = 2 * np.sqrt(d_mm2 * rho) - 3 / (2 * 300.0) * np.sqrt(d_mm2 / rho)
    assert speed == pytest.approx(expected, rel=0.1)


# ---------------------------------------------------------------------------------------------
# simulated series on real baselines


@pytest.fixture(scope="module")
def baseline():
    return S.load_baseline(DATA / "brats" / "Brats18_CBICA_AME_1")


def _scenario(rng, **changes):
    s = S.draw_scenario(rng)
    s.available[:] = True
    s.biopsy_only = False
    for key, value in changes.items():
        setattr(s, key, value)
    return s


@needs_data
def test_a_series_is_reproducible_from_its_seed(baseline):
    a = S.simulate_series(baseline, np.random.default_rng(7))
    b = S.simulate_series(baseline, np.random.default_rng(7))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.truth, b.truth)
    assert a.images.shape == (S.VISITS, 4, S.CROP, S.CROP, S.CROP)
    assert list(a.days) == sorted(a.days)


@needs_data
def test_a_resected_cavity_looks_like_csf_and_a_fast_tumour_recurs(baseline):
    rng = np.random.default_rng(1)
    fast = S.simulate_series(baseline, rng, _scenario(rng, rho=0.1, d_white=0.5, chemo_effect=0.0, gross_total=True,
                                                      pseudoprogression=False))
    core = np.isin(baseline.labels, (1, 4))
    t1ce = S.MODALITIES.index("t1ce")
    cavity_signal = np.median(fast.images[0, t1ce][S.ndimage.binary_erosion(core, iterations=2)])
    white = np.median(fast.images[0, t1ce][baseline.tissue == 3])
    assert cavity_signal < 0.6 * white  # dark on T1ce, as CSF
    assert not fast.recurrence[0] and fast.recurrence[1:].all()
    assert fast.truth[-1].sum() * S.VOXEL_CM3 > 5  # visible tumour again


@needs_data
def test_a_slow_tumour_under_treatment_does_not_recur(baseline):
    rng = np.random.default_rng(2)
    slow = S.simulate_series(baseline, rng, _scenario(rng, rho=0.004, d_white=0.05, chemo_effect=0.8, alpha=0.04,
                                                      gross_total=True, pseudoprogression=False))
    assert not slow.recurrence.any() and slow.truth[1:].sum() == 0


@needs_data
def test_pseudoprogression_enhances_without_tumour_then_fades(baseline):
    rng = np.random.default_rng(3)
    s = _scenario(rng, rho=0.004, d_white=0.05, chemo_effect=0.8, gross_total=True, pseudoprogression=True,
                  pseudo_amplitude=1.0, pseudo_width=30.0)
    s.pseudo_peak = s.visit_days[1]
    series = S.simulate_series(baseline, rng, s)
    assert series.pseudo[1] and not series.recurrence[1]
    assert series.masks[1].sum() > series.truth[1].sum() + 50  # the reader outlines enhancement that is not tumour
    assert not series.pseudo[3]


@needs_data
def test_an_untreated_slow_tumour_stays_visible_and_is_not_a_recurrence(baseline):
    """Biopsy only: no cavity, no treatment; the tumour and its edema stay on the scans, and only growth
    would make a visit a recurrence."""
    rng = np.random.default_rng(4)
    series = S.simulate_series(baseline, rng, _scenario(rng, biopsy_only=True, rho=0.004, d_white=0.05))
    volumes = series.truth.sum(axis=(1, 2, 3)) * S.VOXEL_CM3
    assert volumes.min() > 5 and not series.recurrence.any()
    flair = S.MODALITIES.index("flair")
    edema = baseline.labels == 2
    last = series.images[-1, flair]
    white = last[(baseline.tissue == 3) & ~(baseline.labels > 0) & (last > 0)]
    assert np.median(last[edema]) > 1.15 * np.median(white)  # the edema still bright on FLAIR


# ---------------------------------------------------------------------------------------------
# the network and its file


def test_the_conv_gru_follows_its_gate_equations():
    torch.manual_seed(0)
    cell = ConvGRUCell(2, 3)
    x, h = torch.randn(1, 2, 4, 4, 4), torch.randn(1, 3, 4, 4, 4)
    w, b = cell.gates.weight, cell.gates.bias
    conv = lambda inp, weight, bias: torch.nn.functional.conv3d(inp, weight, bias, padding=1)  # noqa: E731
    # W x + U h as two separate convolutions of x and h, as the equations are written
    z = torch.sigmoid(conv(x, w[:3, :2], b[:3]) + conv(h, w[:3, 2:], None))
    r = torch.sigmoid(conv(x, w[3:, :2], b[3:]) + conv(h, w[3:, 2:], None))
    wc, bc = cell.candidate.weight, cell.candidate.bias
    h_tilde = torch.tanh(conv(x, wc[:, :2], bc) + conv(r * h, wc[:, 2:], None))
    assert torch.allclose(cell(x, h), (1 - z) * h + z * h_tilde, atol=1e-5)


def test_the_network_reads_a_series_in_order_and_any_modality_may_be_missing():
    torch.manual_seed(0)
    net = RecurrenceNet().eval()
    rng = np.random.default_rng(0)
    images = rng.uniform(100, 200, (2, 4, 16, 16, 16)).astype(np.float32)
    masks = np.zeros((2, 16, 16, 16), np.uint8)
    masks[1, 6:10, 6:10, 6:10] = 1
    only_t1ce = np.zeros((2, 4), bool)
    only_t1ce[:, 1] = True
    x = torch.from_numpy(series_inputs(images, only_t1ce, masks, [0.0, 90.0])[None])
    with torch.no_grad():
        logits, rec = net(x)
        _, reversed_rec = net(torch.flip(x, dims=[1]))
    assert logits.shape == (1, 1, 16, 16, 16) and rec.shape == (1,)
    assert torch.isfinite(logits).all() and float(rec) != pytest.approx(float(reversed_rec), abs=1e-6)
    assert x[0, :, 0].abs().sum() == 0  # the absent T1 is zeros, flagged absent
    assert x[0, :, 5].min() == 1.0 and x[0, :, 4].max() == 0.0


def test_thick_slice_augmentation_looks_like_a_thick_slice_scan_after_the_follow_ups_resampling():
    """Training degrades some simulated 2 mm series to thick slices; what it makes must resemble what the
    inference path (``_on``: smoothing and linear resampling to the 2 mm cube) makes of a scan really
    acquired in 6 mm slabs, much more than the untouched 2 mm scan does."""
    from scipy.ndimage import gaussian_filter

    from gliomasuite.recurrence.dataset import thick_slices
    from gliomasuite.recurrence.inference import _on

    rng = np.random.default_rng(0)
    field = gaussian_filter(rng.normal(size=(48, 48, 48)), 2.0).astype(np.float32)
    thin = sitk.GetImageFromArray(field)
    thin.SetSpacing((2.0, 2.0, 2.0))
    slabs = field.reshape(16, 3, 48, 48).mean(axis=1)  # each 6 mm slice the mean of its three 2 mm voxels
    thick = sitk.GetImageFromArray(slabs)
    thick.SetSpacing((2.0, 2.0, 6.0))
    thick.SetOrigin((0.0, 0.0, 2.0))  # the first slab's centre is the second 2 mm voxel's
    seen_thin, seen_thick = _on(thin, thin), _on(thin, thick)
    x = np.zeros((1, 10, 48, 48, 48), np.float32)
    x[0, 1] = seen_thin
    augmented = thick_slices(x, 3, 1)[0, 1]
    inner = (slice(4, 44),) * 3
    assert np.abs(augmented - seen_thick)[inner].mean() < 0.3 * np.abs(seen_thin - seen_thick)[inner].mean()
    # flags and intervals are untouched, the mask stays binary
    x[0, 5] = 1.0
    x[0, 8, 20:23, 10:20, 10:20] = 1.0
    x[0, 9] = 0.9
    out = thick_slices(x, 3, 1)[0]
    assert np.array_equal(out[5], x[0, 5]) and np.array_equal(out[9], x[0, 9])
    assert set(np.unique(out[8])) <= {0.0, 1.0} and out[8].any()


def test_weights_round_trip_and_a_tampered_or_pickled_file_is_refused(tmp_path):
    torch.manual_seed(0)
    net = RecurrenceNet().eval()
    path = tmp_path / "r.npz"
    digest = save_recurrence_weights(net, path, {"note": "test"})
    again, meta = load_recurrence_weights(path, expected_sha256=digest)
    x = torch.randn(1, 2, 10, 8, 8, 8)
    with torch.no_grad():
        assert torch.allclose(net(x)[1], again(x)[1], atol=2e-2) and meta == {"note": "test"}
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(GliomaSuiteError, match="checksum"):
        load_recurrence_weights(path, expected_sha256=digest)
    pickled = tmp_path / "p.npz"
    np.savez(pickled, w=np.array([{"code": "not allowed"}], dtype=object))
    with pytest.raises(GliomaSuiteError, match="cannot be read"):
        load_recurrence_weights(pickled)


def test_the_shipped_model_is_registered_with_its_checksum_and_card():
    entry = recurrence_entry()
    assert (MODELS_DIR / entry["file"]).is_file() and (MODELS_DIR / entry["card"]).is_file()
    model, _ = load_recurrence_model()
    assert isinstance(model, RecurrenceNet)


# ---------------------------------------------------------------------------------------------
# inference: what it refuses


def _image(array, spacing=(1.0, 1.0, 1.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    return image


@pytest.fixture(scope="module")
def small_series():
    rng = np.random.default_rng(0)
    shape = (60, 70, 70)
    zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
    head = ((zz - 30) ** 2 + (yy - 35) ** 2 + (xx - 35) ** 2) <= 28 ** 2
    visits = []
    for day, radius in ((0.0, 6), (90.0, 9)):
        ball = ((zz - 30) ** 2 + (yy - 30) ** 2 + (xx - 40) ** 2) <= radius ** 2
        t1ce = (head * (500 + rng.normal(0, 10, shape)) + 700 * ball).astype(np.float32)
        visits.append(Visit(f"day{int(day)}", {"t1ce": _image(t1ce)}, _image(ball.astype(np.uint8)), day))
    return visits


def test_two_dated_scans_give_a_probability_and_a_map_on_the_baseline_grid(small_series):
    out = predict_recurrence(small_series, small_series[0].images["t1ce"])
    assert 0.0 <= out.probability <= 1.0 and out.called == (out.probability >= 0.5) and not out.reasons
    assert out.map.GetSize() == small_series[0].images["t1ce"].GetSize()
    values = sitk.GetArrayFromImage(out.map)
    assert values.min() >= 0 and values.max() <= 1
    assert "P(recurrence)" in out.sentence()


def test_one_undated_scan_still_gets_its_map(small_series):
    first = small_series[0]
    out = predict_recurrence([Visit(first.label, first.images, first.tumour, None)], first.images["t1ce"])
    assert out.probability is None and out.map is not None


@pytest.mark.parametrize("change, reason", [
    ("one", "at least two time points"),
    ("undated", "dates are unknown"),
    ("far", "further apart"),
    ("unregistered", "registration"),
    ("no_t1ce_last", "has no T1ce"),
])
def test_no_number_where_a_number_would_mislead(small_series, change, reason):
    first, second = small_series
    if change == "one":
        visits = [first]
    elif change == "undated":
        visits = [first, Visit(second.label, second.images, second.tumour, None)]
    elif change == "far":
        visits = [first, Visit(second.label, second.images, second.tumour, 400.0)]
    elif change == "unregistered":
        visits = [first, Visit(second.label, second.images, second.tumour, 90.0, registration_failed=True)]
    else:
        visits = [first, Visit(second.label, {"flair": second.images["t1ce"]}, second.tumour, 90.0)]
    out = predict_recurrence(visits, first.images["t1ce"])
    assert out.probability is None and out.called is None
    assert any(reason in r for r in out.reasons) and out.sentence().startswith("No recurrence probability")
    assert not (change == "undated" and any("share a date" in r for r in out.reasons))  # only the true reason
    if change != "no_t1ce_last":
        assert out.map is not None  # the map needs one scan with a T1ce


# ---------------------------------------------------------------------------------------------
# training


@needs_data
def test_training_resumes_from_its_checkpoint_and_refuses_unknown_cases(tmp_path):
    from gliomasuite.recurrence.training import train_recurrence

    brats = DATA / "brats"
    with pytest.raises(GliomaSuiteError, match="NOT_A_CASE"):
        train_recurrence(brats, tmp_path / "bad", ["NOT_A_CASE"], series_per_case=1, epochs=1)
    assert not (tmp_path / "bad" / "simulations").exists()  # refused before any simulation
    small = tmp_path / "data"
    small.mkdir()
    for case in ("Brats18_CBICA_AME_1", "BraTS2021_01477"):
        (small / case).symlink_to(brats / case)
    run = tmp_path / "run"
    first = train_recurrence(small, run, ["BraTS2021_01477"], series_per_case=1, epochs=1, batch=2)
    assert first["train_cases"] == ["Brats18_CBICA_AME_1"] and first["validation_cases"] == ["BraTS2021_01477"]
    second = train_recurrence(small, run, ["BraTS2021_01477"], series_per_case=1, epochs=2, batch=2)
    log = [json.loads(line) for line in (run / "train-log.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in log] == [1, 2]  # the first epoch was not trained again
    model, meta = load_recurrence_weights(second["weights"], expected_sha256=second["sha256"])
    assert meta["epochs"] == 2


def test_train_recurrence_command_refuses_a_missing_data_folder_in_one_sentence(tmp_path, capsys):
    from gliomasuite import cli

    code = cli.main(["train-recurrence", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"),
                     "--validation", "A"])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and "Traceback" not in err and not (tmp_path / "run").exists()
