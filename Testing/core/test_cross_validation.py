"""The segmentation cross-validation's splits (tools/cross_validate_segmentation.py): no case, and no
mirrored copy of one, is ever both trained and validated on in a fold."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("cross_validate_segmentation", ROOT / "tools" / "cross_validate_segmentation.py")
cv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cv)


def test_every_unseen_case_is_validated_exactly_once_and_the_seen_ones_never():
    assert len(cv.CV) == len(set(cv.CV)) == 25 and not set(cv.CV) & set(cv.BASE)
    for k in (4, 5):
        folds = cv.folds(k)
        flat = [case for fold in folds for case in fold]
        assert sorted(flat) == sorted(cv.CV)  # each once, none of BASE
        assert max(map(len, folds)) - min(map(len, folds)) <= 1
        assert cv.folds(k) == folds  # the same split every time
        # Stratified: the big CBICA group is spread evenly.
        cbica = [sum(cv.group(c) == "CBICA" for c in fold) for fold in folds]
        assert max(cbica) - min(cbica) <= 1, cbica
    # The two lower-grade TCIA10 cases fall in different folds, so each is validated by a model that
    # trained on the other.
    assert [i for i, f in enumerate(cv.folds(4)) if "Brats18_TCIA10_639_1" in f] != \
        [i for i, f in enumerate(cv.folds(4)) if "Brats18_TCIA10_628_1" in f]


def test_a_fold_trains_on_no_validation_case_nor_its_mirror(tmp_path):
    names = cv.BASE + cv.CV + [f"Mirrored_{c}" for c in cv.BASE[:5] + cv.CV] + ["Synthetic_101", "Healthy_111",
                                                                                 "Somebody_else"]
    names += [f"Pseudo_Unlabelled_f{fold}" for fold in range(4)]
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "cache.json").write_text(json.dumps({"cases": {n: {} for n in names}}))
    for fold, held in enumerate(cv.folds(4)):
        training = set(cv.training_cases(tmp_path, fold, 4))
        for case in held:
            assert case not in training and f"Mirrored_{case}" not in training
        assert set(cv.BASE) <= training and "Synthetic_101" in training and "Healthy_111" in training
        assert set(cv.CV) - set(held) <= training
        assert "Somebody_else" not in training  # only the named cases are ever read
        # the unlabelled case only as labelled by this fold's own model, which never saw the fold's cases
        assert {n for n in training if n.startswith("Pseudo_")} == {f"Pseudo_Unlabelled_f{fold}"}
