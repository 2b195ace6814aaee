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
    with pytest.raises(DataError, match="cannot make .* folds of 3 patient.*must be 2..3"):
        patient_kfold(["a", "b", "c"], 4)


def test_iterative_stratification_spreads_every_finding_evenly(sample_root):
    from medxfer.data import read_chestxray14

    ds = read_chestxray14(sample_root)
    folds = patient_kfold(ds.patient_ids, 5, Y=ds.labels, seed=0)
    per_fold = np.array([ds.labels[te].sum(0) for _, te in folds])
    assert (per_fold.max(0) - per_fold.min(0) <= 1).all()  # even Hernia (14) and Edema (12)
    sizes = [len(te) for _, te in folds]
    assert max(sizes) - min(sizes) <= 1


def test_iterative_stratification_keeps_patients_together_and_balances():
    groups, Y = _several_images_per_patient(n_patients=200, seed=2)
    folds = patient_kfold(groups, 4, Y=Y, seed=0)
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])
    per_fold = np.array([Y[te].sum(0) for _, te in folds])
    assert (per_fold.max(0) - per_fold.min(0) <= 0.25 * per_fold.mean(0) + 5).all()


SHARES = (0.1, 0.2, 0.25, 0.3, 0.4, 0.5)


@pytest.mark.parametrize("test_size", SHARES)
@pytest.mark.parametrize("labelled", [False, True])
def test_holdout_holds_out_test_size_of_single_image_patients(test_size, labelled):
    groups = np.array([f"p{i}" for i in range(200)])
    Y = (np.random.default_rng(1).random((200, 4)) < 0.2).astype(float) if labelled else None
    for seed in (0, 1):
        tr, te = patient_holdout(groups, test_size, Y=Y, seed=seed)
        assert sorted(np.concatenate([tr, te])) == list(range(200))
        assert abs(len(te) / 200 - test_size) <= 0.02


@pytest.mark.parametrize("test_size", SHARES)
def test_holdout_share_and_stratification_on_the_bundled_sample(sample_root, test_size):
    from medxfer.data import read_chestxray14

    ds = read_chestxray14(sample_root)
    tr, te = patient_holdout(ds.patient_ids, test_size, Y=ds.labels, seed=0)
    check_no_patient_overlap(ds.patient_ids, tr, te)
    share = len(np.unique(ds.patient_ids[te])) / len(np.unique(ds.patient_ids))
    assert abs(share - test_size) <= 0.02
    # every finding's positives are split in about the same proportion
    expected = test_size * ds.labels.sum(0)
    assert (np.abs(ds.labels[te].sum(0) - expected) <= 2).all()


@pytest.mark.parametrize("test_size", [0.5, 0.25, 0.2, 0.1])
def test_holdout_with_whole_number_of_folds_is_the_first_fold(test_size):
    # Unchanged from the k-fold holdout that earlier results (the demo: 0.25, seed 0) used.
    groups, Y = _several_images_per_patient(n_patients=60)
    tr, te = patient_holdout(groups, test_size, Y=Y, seed=5)
    tr_k, te_k = patient_kfold(groups, round(1 / test_size), Y=Y, seed=5)[0]
    np.testing.assert_array_equal(te, te_k)
    np.testing.assert_array_equal(tr, tr_k)


def test_holdout_keeps_patients_together_for_any_share():
    groups, Y = _several_images_per_patient(n_patients=120, seed=4)
    for test_size in (0.3, 0.4, 0.6, 0.15):
        tr, te = patient_holdout(groups, test_size, Y=Y, seed=0)
        assert not set(groups[tr]) & set(groups[te])
        assert abs(len(te) / len(groups) - test_size) <= 0.03


def test_holdout_refuses_an_empty_side():
    with pytest.raises(DataError, match="test_size must be in"):
        patient_holdout(["a", "b"], 1.0)
    with pytest.raises(DataError, match="at least 2 patients"):
        patient_holdout(["a", "a"], 0.3)
