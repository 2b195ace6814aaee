"""medxfer.pipeline: the Python API the commands are a thin layer over."""

import pytest

from .conftest import multilabel_data as _data


def test_train_refuses_refit_and_ensemble_with_selection(tmp_path):
    from medxfer.errors import DataError
    from medxfer.features import FeatureSet
    from medxfer.data import Dataset
    from medxfer.pipeline import train_from_features
    import pandas as pd

    X, Y = _data(n=40)
    table = pd.DataFrame({"image_id": [f"{i}.png" for i in range(40)], "patient_id": [str(i) for i in range(40)],
                          "path": [f"{i}.png" for i in range(40)]})
    fs = FeatureSet(X, Dataset(table, Y, ("A", "B", "C"), name="t"), {"backbone": {"name": "x"}})
    with pytest.raises(DataError, match="refit retrains on the validation patients"):
        train_from_features(fs, head={"refit": True})
    with pytest.raises(DataError, match="--ensemble applies without selection"):
        train_from_features(fs, head={"n_ensemble": 3})
