"""Models-from-code: a churn classifier that looks its own features up by customer id.

A request carries only the key (`customer_id`) and the request-time features; `predict` asks
the online store for the rest (the feature service named in the model config), computes the
on-demand features the same way training did (Feast runs the service's on-demand view), and
answers the probability with the features it used and when they were computed. `load_context`
opens the feature store once; the folder holding `feature_store.yaml` comes from the model
config (`feature_repo`), which a deployment can override without re-logging the model.
"""

import time

import mlflow
import pandas as pd
from lookupkit.lookups import LookupConfig, OnlineLookup
from mlflow.pyfunc import PythonModel


class ChurnLookupModel(PythonModel):
    def load_context(self, context):
        from feast import FeatureStore

        config = dict(context.model_config or {})
        if "feature_repo" not in config:
            raise ValueError(
                "The model config needs 'feature_repo': the folder of feature_store.yaml"
            )
        self.config = LookupConfig.from_dict(config)
        self.lookups = OnlineLookup(FeatureStore(repo_path=config["feature_repo"]), self.config)
        self.classifier = mlflow.sklearn.load_model(context.artifacts["classifier"])
        self.inputs = list(config.get("model_features") or self.classifier.feature_names_in_)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        values, computed_at = self.lookups.lookup(model_input)
        request = {name: model_input[name].tolist() for name in self.config.request_features}
        rows = pd.DataFrame({name: {**values, **request}[name] for name in self.inputs})
        out = {self.config.entity_key: model_input[self.config.entity_key].tolist()}
        out["churn_probability"] = self.classifier.predict_proba(rows)[:, 1]
        for view, seconds in computed_at.items():
            out[f"{view}_as_of"] = [
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s)) for s in seconds
            ]
        return pd.DataFrame({**out, **values})


mlflow.models.set_model(ChurnLookupModel())
