"""Cost of packaging choices for one model on this machine: folder size, load time and
single-row predict latency for

- `sklearn`: scaler + SVC saved with the sklearn flavor (skops);
- `onnx`: the same fitted pipeline converted to ONNX, run by onnxruntime in a pyfunc;
- `private_lib`: a pipeline using the private `weather_features` wheel, requirement by path;
- `private_lib_bundled`: the same after `add_libraries_to_model` (every dependency as a wheel).

Run: `python benchmarks/model_packaging.py` (the wheelhouse build reads the package index once).
Writes benchmarks/results/model_packaging.md and model_packaging.json with per method `load_s`,
`size_mb`, `p50_ms` (and `p99_ms`). Load time is the median of 3 in-process loads after a
first warm-up load, so it measures reading the model, not importing libraries.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

# Run as a script, this folder is on sys.path, not the repository root: add it, so
# `benchmarks.common` and `utils` import.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks.common import RESULTS, machine_info, write_json  # noqa: E402
from utils.env import REPO_ROOT, work_path  # noqa: E402
from utils.environments.requirements import (
    add_libraries_offline,
    build_wheel,
    build_wheelhouse,
    folder_size_mb,
    install_wheel,
    model_environment_requirements,
    pinned_requirements,
)
from utils.environments.weather import (
    WEATHER_FEATURES,
    make_weather,
    rain_features_pipeline,
    rain_svc_pipeline,
    split_weather,
    to_onnx,
)
from utils.tracking import register_model, setup_mlflow  # noqa: E402

PREDICT_CALLS = 300


class OnnxRainModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(
            context.artifacts["onnx_model"], providers=["CPUExecutionProvider"]
        )

    def predict(self, context, model_input, params=None):
        observations = model_input[WEATHER_FEATURES].to_numpy(dtype=np.float32)
        labels = self.session.run(["output_label"], {"observations": observations})[0]
        return pd.DataFrame({"will_rain": labels.astype("int64")})


def measure(path: str, row: pd.DataFrame) -> dict[str, float]:
    mlflow.pyfunc.load_model(path)  # warm-up: imports, caches
    loads = []
    for _ in range(3):
        start = time.perf_counter()
        model = mlflow.pyfunc.load_model(path)
        loads.append(time.perf_counter() - start)
    for _ in range(20):
        model.predict(row)
    latencies = []
    for _ in range(PREDICT_CALLS):
        start = time.perf_counter()
        model.predict(row)
        latencies.append((time.perf_counter() - start) * 1000)
    return {
        "size_mb": round(folder_size_mb(path), 3),
        "load_s": round(statistics.median(loads), 4),
        "p50_ms": round(float(np.percentile(latencies, 50)), 3),
        "p99_ms": round(float(np.percentile(latencies, 99)), 3),
    }


def main() -> None:
    setup_mlflow("benchmark_packaging")
    X_train, X_test, y_train, _ = split_weather(make_weather(3000))
    row = X_test.head(1)
    svc = rain_svc_pipeline().fit(X_train, y_train)
    wheelhouse = work_path("wheelhouse")
    wheel = build_wheel(REPO_ROOT / "packages" / "weather_features", wheelhouse)
    install_wheel(wheel)
    featured = rain_features_pipeline().fit(X_train, y_train)
    onnx_path = work_path("onnx") / "benchmark_rain_svc.onnx"
    onnx_path.write_bytes(to_onnx(svc))

    with mlflow.start_run(run_name="benchmark-packaging"):
        uris = {
            "sklearn": mlflow.sklearn.log_model(
                svc,
                name="sklearn",
                pip_requirements=pinned_requirements("scikit-learn", "pandas", "numpy", "skops"),
            ).model_uri,
            "onnx": mlflow.pyfunc.log_model(
                name="onnx",
                python_model=OnnxRainModel(),
                artifacts={"onnx_model": str(onnx_path)},
                pip_requirements=pinned_requirements("onnxruntime", "numpy", "pandas"),
            ).model_uri,
        }
        private = mlflow.sklearn.log_model(
            featured,
            name="private_lib",
            serialization_format="cloudpickle",
            pip_requirements=pinned_requirements(
                "mlflow-skinny", "scikit-learn", "pandas", "numpy", "scipy", "cloudpickle"
            )
            + [str(wheel)],
        )
    uris["private_lib"] = private.model_uri
    version = register_model(private.model_uri, "benchmark_rain_private_lib")
    local = mlflow.artifacts.download_artifacts(private.model_uri)
    build_wheelhouse(model_environment_requirements(local), wheelhouse)
    start = time.perf_counter()
    bundled = add_libraries_offline(f"models:/{version.name}/{version.version}", wheelhouse)
    bundle_s = time.perf_counter() - start
    uris["private_lib_bundled"] = f"models:/{bundled.name}/{bundled.version}"

    figures: dict[str, dict[str, float]] = {}
    for method, uri in uris.items():
        figures[method] = measure(mlflow.artifacts.download_artifacts(uri), row)
    figures["private_lib_bundled"]["add_libraries_s"] = round(bundle_s, 1)
    figures["onnx_vs_sklearn_p50_ratio"] = round(
        figures["onnx"]["p50_ms"] / figures["sklearn"]["p50_ms"], 3
    )

    machine = machine_info()
    write_json("model_packaging", figures, machine)
    methods = [m for m in figures if isinstance(figures[m], dict)]
    lines = ["| method | size_mb | load_s | p50_ms | p99_ms |", "|---|---|---|---|---|"]
    lines += [
        f"| {m} | {figures[m]['size_mb']} | {figures[m]['load_s']} | {figures[m]['p50_ms']} "
        f"| {figures[m]['p99_ms']} |"
        for m in methods
    ]
    table = "\n".join(lines)
    (RESULTS / "model_packaging.md").write_text(
        "# Packaging: model folder size, load time, single-row predict latency\n\n"
        f"Will-it-rain model, {PREDICT_CALLS} single-row predicts in process, "
        f"{machine['cores']} cores, load average at the end {machine.get('load_avg_1m', '?')}. "
        f"`add_libraries_to_model` from a local wheelhouse took {bundle_s:.1f} s. "
        f"ONNX / sklearn p50 ratio: {figures['onnx_vs_sklearn_p50_ratio']}.\n\n{table}\n"
    )
    print(table)


if __name__ == "__main__":
    main()
