import numpy as np
import pytest

from medxfer.errors import DataError
from medxfer.splits import check_no_patient_overlap, patient_holdout, patient_kfold


def _several_images_per_patient(n_patients=40, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 6, n_patients)
    groups = np.repeat([f"p{i}" for i in range(n_patients)], counts)
    Y = (rng.random((len(groups), 3)) < [0.3, 0.1, 0.05]).astype(np.float32)
    return groups, Y


def test_kfold_is_patient_wise_and_covers_every_row():
    groups, Y = _several_images_per_patient()
    folds = patient_kfold(groups, 5, Y=Y, seed=1)
    seen = np.concatenate([te for _, te in folds])
    assert sorted(seen) == list(range(len(groups)))
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])
        assert len(tr) + len(te) == len(groups)


def test_holdout_is_patient_wise_and_seeded():
    groups, Y = _several_images_per_patient()
    tr, te = patient_holdout(groups, 0.25, Y=Y, seed=3)
    assert not set(groups[tr]) & set(groups[te])
    assert 0.1 < len(set(groups[te])) / 40 < 0.4
    tr2, te2 = patient_holdout(groups, 0.25, Y=Y, seed=3)
    np.testing.assert_array_equal(te, te2)
    _, te3 = patient_holdout(groups, 0.25, Y=Y, seed=4)
    assert not np.array_equal(te, te3)


def test_overlap_check_raises_naming_patients():
    groups = np.array(["a", "a", "b", "c"])
    with pytest.raises(DataError, match=r"1 patient\(s\) appear in more than one part.*e\.g\. a"):
        check_no_patient_overlap(groups, [0, 2], [1, 3])
    check_no_patient_overlap(groups, [0, 1], [2, 3])


def test_bad_fold_count():
    with pytest.raises(DataError, match="n_splits must be in 2..3"):
        patient_kfold(["a", "b", "c"], 4)
