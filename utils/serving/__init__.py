"""Real-time serving (chapters 04-05): one import for a chapter.

- `server`: the local scoring server (`serve_model`, `ModelServer`) on 127.0.0.1.
- `guard`: runs inside the server process: MLflow's scoring app behind body, nesting and token
  limits (`python -m utils.serving.guard`).
- `client`: payloads in every format and `score_model` over HTTP, for any endpoint.
- `databricks`: Model Serving endpoint configs (`served_entities`, `traffic_config`) and
  deploying them through `databricks-sdk`.
- `loadtest`: latency and throughput at N concurrent clients.
"""

from utils.processes import LOOPBACK, free_port, port_is_free
from utils.serving.client import (
    DATABRICKS_MAX_PAYLOAD_BYTES,
    PAYLOAD_FORMATS,
    PayloadTooLargeError,
    ScoringError,
    build_payload,
    check_payload_size,
    error_from_response,
    predictions_frame,
    score_in_chunks,
    score_model,
)
from utils.serving.databricks import (
    delete_endpoint,
    deploy_endpoint,
    endpoint_config,
    inference_table_gateway,
    served_entity,
    traffic_routes,
)
from utils.serving.server import (
    ModelServer,
    ServingError,
    serve_model,
    serving_command,
    stop_all_servers,
)

__all__ = [
    "DATABRICKS_MAX_PAYLOAD_BYTES",
    "LOOPBACK",
    "PAYLOAD_FORMATS",
    "ModelServer",
    "PayloadTooLargeError",
    "ScoringError",
    "ServingError",
    "build_payload",
    "check_payload_size",
    "delete_endpoint",
    "deploy_endpoint",
    "endpoint_config",
    "error_from_response",
    "free_port",
    "inference_table_gateway",
    "port_is_free",
    "predictions_frame",
    "score_in_chunks",
    "score_model",
    "serve_model",
    "served_entity",
    "serving_command",
    "stop_all_servers",
    "traffic_routes",
]
