"""Models-from-code: the digits CNN, reading base64-encoded PNG images.

A request that is not base64 or not a PNG raises an MlflowException with
INVALID_PARAMETER_VALUE, which the scoring server answers with HTTP 400 and the message,
instead of a 500 and a stack trace.
"""

import json
from pathlib import Path

import mlflow
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel
from modelkit import BadInputError, require_artifact, require_column
from modelkit.digit_reader import DigitsCNN, batch_tensor, scores


class DigitReader(PythonModel):
    def load_context(self, context):
        weights_dir = require_artifact(context.artifacts, "model-weights")
        config = json.loads(Path(weights_dir, "config.json").read_text())
        self.network = DigitsCNN(**config["network"])
        self.network.load_state_dict(torch.load(Path(weights_dir, "weights.pt"), weights_only=True))
        self.network.eval()  # no dropout or augmentation at prediction time

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        try:
            images = batch_tensor(require_column(model_input, "image"))
        except BadInputError as error:
            raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from None
        with torch.no_grad():
            return pd.DataFrame(scores(self.network(images)))


mlflow.models.set_model(DigitReader())
