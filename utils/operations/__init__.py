"""Operating a deployed model (chapter 12): one module per concern.

- `alias_history`: every alias move the project's helpers make, appended to a table, and
  "which version held this alias at time T".
- `shadow`: reading a shadow deployment's log and reporting agreement, disagreement by
  segment and score band, and the shadow model's latency and errors.
- `canary`: a progressive canary with guardrails that rolls itself back.
- `metrics`: Prometheus metrics for the scoring server and a log of rejected requests.
- `dashboard`: a one-page monitoring image and HTML page.
- `cards`: model cards per registered version, and a champion-vs-challenger diff card.
- `databricks`: the same ideas as Databricks endpoint, inference-table and monitor configs.
"""
