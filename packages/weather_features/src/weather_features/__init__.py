"""Derived features for the will-it-rain model (a private library in the chapter 07 story)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

__version__ = "0.1.0"

RAW_COLUMNS = [
    "temperature_c",
    "humidity",
    "wind_speed_kmh",
    "wind_bearing_deg",
    "visibility_km",
    "pressure_hpa",
    "condition",
]
CONDITIONS = [0, 1, 2, 3]  # clear, cloudy, fog, drizzle


def dew_point_c(temperature_c, humidity) -> np.ndarray:
    """Magnus formula; humidity as a fraction in (0, 1]."""
    a, b = 17.62, 243.12
    gamma = np.log(np.clip(np.asarray(humidity, float), 1e-3, 1.0)) + a * np.asarray(
        temperature_c, float
    ) / (b + np.asarray(temperature_c, float))
    return b * gamma / (a - gamma)


class RainFeatures(TransformerMixin, BaseEstimator):
    """Raw observations -> numeric features. Stateless: nothing is fitted, so nothing can be
    refitted by mistake at prediction time."""

    def fit(self, X: pd.DataFrame, y=None):
        missing = [c for c in RAW_COLUMNS if c not in X.columns]
        if missing:
            raise ValueError(f"RainFeatures needs columns {missing}; got {list(X.columns)}.")
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        bearing = np.radians(X["wind_bearing_deg"].to_numpy(float))
        spread = X["temperature_c"].to_numpy(float) - dew_point_c(X["temperature_c"], X["humidity"])
        condition = X["condition"].to_numpy(int)
        one_hot = np.stack([(condition == c).astype(float) for c in CONDITIONS], axis=1)
        numeric = X[["humidity", "wind_speed_kmh", "visibility_km", "pressure_hpa"]].to_numpy(float)
        return np.column_stack([numeric, np.sin(bearing), np.cos(bearing), spread, one_hot])
