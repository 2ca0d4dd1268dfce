"""scikit-learn's wine data (178 wines, 13 measurements, 3 cultivars) as DataFrames."""

from __future__ import annotations

from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split

WINE_LABEL = "cultivar"


def wine_features() -> list[str]:
    return list(load_wine().feature_names)


def load_wine_split(test_size: float = 0.3, seed: int = 42):
    """X_train, X_test, y_train, y_test with named float columns, stratified by cultivar."""
    data = load_wine(as_frame=True)
    X = data.data.astype("float64")
    y = data.target.rename(WINE_LABEL)
    return train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)
