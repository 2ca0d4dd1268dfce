"""The logic the chapter notebooks call, laid out by chapter family.

Shared core (any chapter):
    env          where we run (laptop or Databricks), the work dir, parameters, `uc_name`
    spark        the Spark session (local, a standalone cluster, or Databricks')
    cluster      a standalone Spark cluster on 127.0.0.1
    tables       catalog tables: read, write, upsert (`MERGE` on Delta), streams
    tracking     the MLflow tracking store and registry: names, aliases, model URIs
    datasets     the generated bank-churn data and the tables made from it
    training     the churn pipeline every chapter deploys; `ensure_champion`
    processes    every background server on 127.0.0.1: start, wait until ready, stop
    record       `record_results({...})`: a chapter's key results, read back by the tests
    chapters     run the chapter notebooks (`python -m utils.chapters`, what `make run` calls)

Chapter families:
    01 train and register        training, tracking
    02-03 batch and streaming    batch/ (scoring, databricks: Auto Loader), tables, spark
    04 real-time serving         serving/ (server, guard, client, databricks, loadtest)
    05 A/B testing               abtest/ (router, experiment, report)
    06 custom pyfunc             pyfunc/ (wine, support_classifier, digit_reader)
    07 packaging dependencies    environments/ (requirements, targets, weather)
    08 validation and promotion  gate/ (checks, measure, promotion, webhooks)
    09 inference tables          monitoring/ (schema, inference_table, drift, retraining,
                                 lakehouse: Lakehouse Monitoring),
                                 jobs/ (bundle, runner)
    10 RAG evaluation            rag/
    11 feature lookups           features/ (transactions, training_sets, feast_repo,
                                 lookup_model, skew, databricks_fe; model_code/lookupkit)
    12 operating a model         operations/ (shadow, canary, alias_history, metrics,
                                 dashboard, cards, databricks)

Importing `utils` itself loads nothing else: each chapter imports the modules it uses.
"""
