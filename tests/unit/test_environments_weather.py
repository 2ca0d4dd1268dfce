"""utils.weather: the generated observations and the ONNX conversion with the fitted scaler."""

import numpy as np
import pytest

from utils.environments.weather import (
    WEATHER_FEATURES,
    make_weather,
    onnx_scaler_parameters,
    rain_svc_pipeline,
    split_weather,
    to_onnx,
)

pytestmark = pytest.mark.unit


def test_make_weather_is_reproducible_and_plausible():
    frame = make_weather(2000, seed=3)
    assert list(frame.columns) == [*WEATHER_FEATURES, "will_rain"]
    assert frame.equals(make_weather(2000, seed=3))
    assert 0.2 < frame["will_rain"].mean() < 0.5
    assert frame["humidity"].between(0.2, 1.0).all()
    assert frame["wind_bearing_deg"].between(0, 360).all()
    assert set(frame["condition"]) <= {0, 1, 2, 3}
    # drizzle comes with more rain than clear skies
    by_condition = frame.groupby("condition")["will_rain"].mean()
    assert by_condition[3] > by_condition[0]


def test_make_weather_refuses_empty():
    with pytest.raises(ValueError, match="at least 1"):
        make_weather(0)


def test_onnx_keeps_the_fitted_scaler_and_agrees():
    import onnxruntime

    X_train, X_test, y_train, _ = split_weather(make_weather(600))
    pipeline = rain_svc_pipeline().fit(X_train, y_train)
    onnx_bytes = to_onnx(pipeline)
    params = onnx_scaler_parameters(onnx_bytes)
    np.testing.assert_allclose(params["offset"], pipeline["scaler"].mean_, rtol=1e-6)
    np.testing.assert_allclose(params["scale"], 1 / pipeline["scaler"].scale_, rtol=1e-6)
    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    labels = session.run(["output_label"], {"observations": X_test.to_numpy(np.float32)})[0]
    assert (labels == pipeline.predict(X_test)).mean() > 0.99


def test_onnx_scaler_parameters_needs_a_scaler():
    from sklearn.linear_model import LogisticRegression

    X_train, _, y_train, _ = split_weather(make_weather(300))
    onnx_bytes = to_onnx(LogisticRegression(max_iter=2000).fit(X_train, y_train))
    with pytest.raises(ValueError, match="no Scaler node"):
        onnx_scaler_parameters(onnx_bytes)
