"""On-demand features: computed when a row is requested, from stored and request-time values.

Defined once here. Feast's on-demand feature view calls it for training sets
(`get_historical_features`) and for online lookups (`get_online_features`); the Databricks
Unity Catalog function is generated from this very source (`utils.features.databricks`).
"""

from __future__ import annotations


def balance_per_product(balance: float, num_products: int) -> float | None:
    """The customer's balance spread over the products they hold right now."""
    if balance is None:  # nothing stored for the key: no value, and no guess either
        return None
    return float(balance) / int(num_products)
