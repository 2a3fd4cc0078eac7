"""Tests for gliomasuite.followup.rano: every RANO 2.0 threshold at and just past its boundary.

Each table row is one clinical situation with the category RANO 2.0 gives it, so a failing row names
the rule that broke: response against baseline, progression against the nadir, CR, new lesions,
preliminary progression after radiotherapy, the IDH-mutant combination and empty baselines.
"""

import datetime
import json

import pytest

from gliomasuite.errors import GliomaSuiteError
from gliomasuite.followup import rano
from gliomasuite.followup.rano import Scan


def bidimensional(current, baseline, previous=(), **scan):
    return rano.assess(Scan(sum_of_products_mm2=current, **scan), Scan(sum_of_products_mm2=baseline),
                       [Scan(sum_of_products_mm2=value) for value in previous])


def volumetric(current, baseline, previous=()):
    return rano.assess(Scan(enhancing_volume_cm3=current), Scan(enhancing_volume_cm3=baseline),
                       [Scan(enhancing_volume_cm3=value) for value in previous], method=rano.VOLUMETRIC)


@pytest.mark.parametrize("current, baseline, previous, expected", [
    (200.0, 400.0, (), "PR"),          # exactly -50 % from baseline
    (201.0, 400.0, (), "SD"),          # -49.75 %
    (199.0, 400.0, (), "PR"),
    (500.0, 400.0, (), "PD"),          # exactly +25 % from the nadir (= baseline)
    (499.0, 400.0, (), "SD"),
    (501.0, 400.0, (), "PD"),
    (0.0, 400.0, (), "CR"),
    (400.0, 400.0, (), "SD"),
    # Shrank to 200, regrew 30 % to 260: still 35 % below baseline, but progression from the nadir.
    (260.0, 400.0, (300.0, 200.0), "PD"),
    (250.0, 400.0, (300.0, 200.0), "PD"),  # exactly +25 % from the nadir
    (249.0, 400.0, (300.0, 200.0), "SD"),  # +24.5 % from the nadir, -37.75 % from baseline
    (190.0, 400.0, (300.0, 200.0), "PR"),  # decreases are read against baseline, not the nadir
])
def test_bidimensional_thresholds(current, baseline, previous, expected):
    assert bidimensional(current, baseline, previous).category == expected


@pytest.mark.parametrize("current, baseline, previous, expected", [
    (3.5, 10.0, (), "PR"),             # exactly -65 %
    (3.6, 10.0, (), "SD"),
    (3.4, 10.0, (), "PR"),
    (14.0, 10.0, (), "PD"),            # exactly +40 % (float 0.4 would otherwise miss it)
    (13.9, 10.0, (), "SD"),
    (14.1, 10.0, (), "PD"),
    (7.0, 10.0, (5.0,), "PD"),         # +40 % from a nadir of 5, still below baseline
    (6.9, 10.0, (5.0,), "SD"),
    (0.0, 10.0, (), "CR"),
])
def test_volumetric_thresholds(current, baseline, previous, expected):
    assert volumetric(current, baseline, previous).category == expected


def test_nadir_regrowth_is_described_against_the_nadir():
    result = bidimensional(260.0, 400.0, (300.0, 200.0))
    assert result.percent_from_nadir == pytest.approx(30.0)
    assert result.percent_from_baseline == pytest.approx(-35.0)
    assert result.enhancing.nadir == 200.0
    assert "rose 30% from the nadir (200 mm² → 260 mm²)" in result.sentence()


def test_the_sentence_a_radiologist_would_write():
    result = bidimensional(569.0, 800.0, (412.0,), new_lesions=["left hemisphere"])
    assert result.category == "PD" and result.driver == "enhancing and new lesion"
    assert result.sentence().startswith(
        "Progressive disease (RANO 2.0): the sum of bidimensional products of enhancing lesions rose 38% from the "
        "nadir (412 mm² → 569 mm²); new measurable enhancing lesion in the left hemisphere.")
    json.dumps(result.to_dict())  # plain data


@pytest.mark.parametrize("current, expected_driver", [(400.0, "new lesion"), (150.0, "new lesion")])
def test_a_new_measurable_lesion_is_progression(current, expected_driver):
    result = bidimensional(current, 400.0, new_lesions=["right hemisphere"])
    assert result.category == "PD" and result.driver == expected_driver
    assert "new measurable enhancing lesion in the right hemisphere" in result.sentence()


def test_non_measurable_enhancing_disease_forbids_complete_response():
    result = bidimensional(0.0, 400.0, non_measurable_enhancing=True)
    assert result.category == "PR"
    assert any("4 weeks later" in note for note in result.notes)


@pytest.mark.parametrize("days_after, preliminary", [(0, True), (56, True), (84, True), (85, False), (200, False)])
def test_progression_within_12_weeks_of_radiotherapy_is_preliminary(days_after, preliminary):
    rt_end = datetime.date(2024, 1, 15)
    scan_date = rt_end + datetime.timedelta(days=days_after)
    result = rano.assess(Scan(sum_of_products_mm2=600.0, date=scan_date), Scan(sum_of_products_mm2=400.0),
                         rt_end=rt_end)
    assert result.category == "PD" and result.preliminary is preliminary
    assert result.days_after_radiotherapy == days_after
    if preliminary:
        assert result.confirm_between == (scan_date + datetime.timedelta(days=28),
                                          scan_date + datetime.timedelta(days=56))
        assert result.sentence().startswith("Preliminary progressive disease (RANO 2.0)")
        assert "confirm with a scan 4–8 weeks later" in result.sentence()
    else:
        assert result.confirm_between is None and "confirm" not in result.sentence()


def test_response_within_12_weeks_is_not_preliminary():
    rt_end = datetime.date(2024, 1, 15)
    result = rano.assess(Scan(sum_of_products_mm2=100.0, date=rt_end + datetime.timedelta(days=30)),
                         Scan(sum_of_products_mm2=400.0), rt_end=rt_end)
    assert result.category == "PR" and not result.preliminary


@pytest.mark.parametrize("enhancing, non_enhancing, expected", [
    ("CR", "CR", "CR"), ("CR", "PR", "CR"), ("CR", "SD", "CR"), ("CR", "PD", "PD"),
    ("PR", "CR", "PR"), ("PR", "PR", "PR"), ("PR", "SD", "PR"), ("PR", "PD", "PD"),
    ("SD", "CR", "SD"), ("SD", "PR", "SD"), ("SD", "SD", "SD"), ("SD", "PD", "PD"),
    ("PD", "CR", "PD"), ("PD", "PR", "PD"), ("PD", "SD", "PD"), ("PD", "PD", "PD"),
    ("PR", None, "PR"), (None, "PR", "PR"),
])
def test_idh_mutant_combination_table(enhancing, non_enhancing, expected):
    assert rano.combine_components(enhancing, non_enhancing) == expected


@pytest.mark.parametrize("enhancing, non_enhancing, expected, driver", [
    ((0.0, 10.0), (56.0, 40.0), "PD", "non-enhancing"),   # enhancing CR, T2/FLAIR +40 % from the nadir
    ((0.0, 10.0), (55.9, 40.0), "CR", "enhancing"),       # T2/FLAIR +39.75 %: not progression
    ((3.0, 10.0), (20.0, 40.0), "PR", "enhancing"),
    ((10.0, 10.0), (14.0, 40.0), "SD", "enhancing"),      # T2/FLAIR -65 % does not make a PR alone
])
def test_idh_mutant_volumetric_assessment(enhancing, non_enhancing, expected, driver):
    current = Scan(enhancing_volume_cm3=enhancing[0], non_enhancing_volume_cm3=non_enhancing[0])
    baseline = Scan(enhancing_volume_cm3=enhancing[1], non_enhancing_volume_cm3=non_enhancing[1])
    result = rano.assess(current, baseline, method=rano.VOLUMETRIC, idh="mutant")
    assert (result.category, result.driver) == (expected, driver)
    assert result.non_enhancing is not None and "non-enhancing (T2/FLAIR)" in result.sentence()


def test_idh_wildtype_ignores_the_non_enhancing_tumour():
    current = Scan(sum_of_products_mm2=400.0, non_enhancing_sum_of_products_mm2=900.0)
    baseline = Scan(sum_of_products_mm2=400.0, non_enhancing_sum_of_products_mm2=400.0)
    result = rano.assess(current, baseline, idh="wildtype")
    assert result.category == "SD" and result.non_enhancing is None
    assert any("only in IDH-mutant" in note for note in result.notes)
    assert rano.assess(current, baseline, idh="mutant").category == "PD"


def test_non_enhancing_only_idh_mutant_glioma_is_judged_on_t2_flair():
    current = Scan(sum_of_products_mm2=0.0, non_enhancing_sum_of_products_mm2=190.0)
    baseline = Scan(sum_of_products_mm2=0.0, non_enhancing_sum_of_products_mm2=400.0)
    result = rano.assess(current, baseline, idh="mutant")
    assert (result.category, result.driver) == ("PR", "non-enhancing")
    assert result.percent_from_baseline == pytest.approx(-52.5)


def test_idh_mutant_without_t2_flair_measure_falls_back_to_enhancing():
    result = rano.assess(Scan(sum_of_products_mm2=100.0), Scan(sum_of_products_mm2=400.0), idh="mutant")
    assert result.category == "PR" and result.non_enhancing is None
    assert any("rests on the enhancing tumour alone" in note for note in result.notes)


@pytest.mark.parametrize("current, expected", [(0.0, "SD"), (120.0, "PD")])
def test_zero_baseline(current, expected):
    result = bidimensional(current, 0.0)
    assert result.category == expected
    assert result.percent_from_baseline is None and result.percent_from_nadir is None
    if expected == "PD":
        assert "percent change from the nadir is undefined" in result.sentence()
    else:
        assert "no measurable enhancing tumour now or at baseline" in result.sentence()


def test_regrowth_after_a_zero_nadir_is_progression():
    result = bidimensional(120.0, 400.0, (0.0,))
    assert result.category == "PD" and result.percent_from_nadir is None
    assert result.percent_from_baseline == pytest.approx(-70.0)


def test_missing_earlier_values_are_left_out_of_the_nadir():
    result = rano.assess(Scan(sum_of_products_mm2=260.0), Scan(sum_of_products_mm2=400.0),
                         [Scan(), Scan(sum_of_products_mm2=200.0)])
    assert result.category == "PD" and result.enhancing.nadir == 200.0
    assert any("left out of the nadir" in note for note in result.notes)


def test_percent_change():
    assert rano.percent_change(150.0, 100.0) == 50.0
    assert rano.percent_change(5.0, 0.0) is None


@pytest.mark.parametrize("long_mm, short_mm, measurable", [(10.0, 10.0, True), (25.0, 9.9, False),
                                                            (9.9, 9.9, False)])
def test_measurable(long_mm, short_mm, measurable):
    assert rano.is_measurable(long_mm, short_mm) is measurable


@pytest.mark.parametrize("call, words", [
    (lambda: rano.assess(Scan(), Scan(sum_of_products_mm2=1.0)), "current scan lacks"),
    (lambda: rano.assess(Scan(sum_of_products_mm2=1.0), Scan()), "baseline scan lacks"),
    (lambda: rano.assess(Scan(sum_of_products_mm2=-1.0), Scan(sum_of_products_mm2=1.0)), "negative"),
    (lambda: rano.assess(Scan(sum_of_products_mm2=1.0), Scan(sum_of_products_mm2=1.0), method="3d"), "method"),
    (lambda: rano.assess(Scan(sum_of_products_mm2=1.0), Scan(sum_of_products_mm2=1.0), idh="yes"), "IDH"),
    (lambda: rano.assess(Scan(sum_of_products_mm2=1.0), Scan(sum_of_products_mm2=1.0),
                         rt_end=datetime.date(2024, 1, 1)), "no date"),
])
def test_errors_name_the_problem(call, words):
    with pytest.raises(GliomaSuiteError, match=words):
        call()


def test_nan_counts_as_not_measured():
    result = rano.assess(Scan(sum_of_products_mm2=260.0), Scan(sum_of_products_mm2=400.0),
                         [Scan(sum_of_products_mm2=float("nan")), Scan(sum_of_products_mm2=200.0)])
    assert result.category == "PD" and result.enhancing.nadir == 200.0
    with pytest.raises(GliomaSuiteError, match="current scan lacks"):
        rano.assess(Scan(sum_of_products_mm2=float("nan")), Scan(sum_of_products_mm2=400.0))
