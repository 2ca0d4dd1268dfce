"""Chapter 07's weather model: "will it rain in the next hours" from seven observations, in the
style of a port authority's forecast.

The data is generated (fixed seed) from these distributions, per observation:

| column | distribution |
|---|---|
| `condition` | 0 clear 45 %, 1 cloudy 35 %, 2 fog 8 %, 3 drizzle 12 % |
| `temperature_c` | normal, mean 14, sd 6 |
| `humidity` (fraction) | beta by condition, mean 0.60 clear, 0.72 cloudy, 0.95 fog, 0.90 drizzle |
| `wind_speed_kmh` | gamma, shape 2, scale 8 (mean 16) |
| `wind_bearing_deg` | 70 % von Mises around 225° (the prevailing south-westerly), 30 % uniform |
| `visibility_km` | log-normal by condition, median 20 clear, 14 cloudy, 0.8 fog, 6 drizzle |
| `pressure_hpa` | normal, mean 1016 clear / 1010 otherwise, sd 7 |

`will_rain` is drawn from a logistic model: humid air, falling pressure, drizzle or cloud
already, strong wind and a south-westerly wind make rain likelier (about 30 % overall).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

WEATHER_FEATURES = [
    "temperature_c",
    "humidity",
    "wind_speed_kmh",
    "wind_bearing_deg",
    "visibility_km",
    "pressure_hpa",
    "condition",
]
WEATHER_LABEL = "will_rain"
CONDITION_NAMES = {0: "clear", 1: "cloudy", 2: "fog", 3: "drizzle"}
_CONDITION_P = [0.45, 0.35, 0.08, 0.12]
_HUMIDITY_MEAN = np.array([0.60, 0.72, 0.95, 0.90])
_VISIBILITY_MEDIAN = np.array([20.0, 14.0, 0.8, 6.0])


def make_weather(n: int = 3000, seed: int = 11) -> pd.DataFrame:
    """`n` observations with the seven features and the `will_rain` label (0/1)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    condition = rng.choice(4, size=n, p=_CONDITION_P)
    concentration = 30.0
    mean = _HUMIDITY_MEAN[condition]
    humidity = np.clip(rng.beta(mean * concentration, (1 - mean) * concentration), 0.2, 1.0)
    prevailing = rng.random(n) < 0.7
    bearing = np.where(
        prevailing,
        np.degrees(rng.vonmises(np.radians(225), 4.0, n)) % 360,
        rng.uniform(0, 360, n),
    )
    frame = pd.DataFrame(
        {
            "temperature_c": rng.normal(14, 6, n),
            "humidity": humidity,
            "wind_speed_kmh": rng.gamma(2.0, 8.0, n),
            "wind_bearing_deg": bearing,
            "visibility_km": np.clip(
                np.exp(rng.normal(np.log(_VISIBILITY_MEDIAN[condition]), 0.35)), 0.1, 30
            ),
            "pressure_hpa": rng.normal(np.where(condition == 0, 1016, 1010), 7),
            "condition": condition.astype("int64"),
        }
    )
    logit = (
        -1.6
        + 9.0 * (frame["humidity"] - 0.72)
        - 0.12 * (frame["pressure_hpa"] - 1012)
        + 0.03 * (frame["wind_speed_kmh"] - 16)
        + 0.7 * np.cos(np.radians(frame["wind_bearing_deg"] - 225))
        + np.select([condition == 3, condition == 1], [1.5, 0.5], 0.0)
    )
    frame[WEATHER_LABEL] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
    return frame


def split_weather(frame: pd.DataFrame, test_size: float = 0.25, seed: int = 11):
    """X_train, X_test, y_train, y_test, stratified by the label."""
    from sklearn.model_selection import train_test_split

    return train_test_split(
        frame[WEATHER_FEATURES],
        frame[WEATHER_LABEL],
        test_size=test_size,
        random_state=seed,
        stratify=frame[WEATHER_LABEL],
    )


def rain_svc_pipeline(seed: int = 0):
    """StandardScaler + RBF SVC on the seven raw features: the model converted to ONNX."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return Pipeline([("scaler", StandardScaler()), ("svc", SVC(C=1.0, random_state=seed))])


def rain_features_pipeline():
    """The private library's RainFeatures, then scaling and a logistic regression.

    Imports `weather_features` (chapter 07 builds and installs it from `packages/`), so the
    logged model cannot load where that library is missing: the point of bundling its wheel.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from weather_features import RainFeatures

    return Pipeline(
        [
            ("features", RainFeatures()),
            ("scaler", StandardScaler()),
            ("classifier", LogisticRegression(max_iter=500)),
        ]
    )


def to_onnx(pipeline, n_features: int = len(WEATHER_FEATURES)) -> bytes:
    """The fitted pipeline (scaler included, with its fitted mean and scale) as an ONNX model."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    with warnings.catch_warnings():  # skl2onnx reads SVC attributes sklearn 1.9 deprecates
        warnings.simplefilter("ignore", FutureWarning)
        onnx_model = convert_sklearn(
            pipeline,
            initial_types=[("observations", FloatTensorType([None, n_features]))],
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
    return onnx_model.SerializeToString()


def onnx_scaler_parameters(onnx_bytes: bytes) -> dict[str, list[float]]:
    """`offset` and `scale` of the Scaler node in an ONNX graph: they must be the training
    mean and 1/std, proof that prediction uses the fitted scaler and never refits one."""
    import onnx

    graph = onnx.load_from_string(onnx_bytes).graph
    for node in graph.node:
        if node.op_type == "Scaler":
            return {a.name: list(a.floats) for a in node.attribute}
    raise ValueError("The ONNX graph has no Scaler node; was the scaler converted with the model?")
