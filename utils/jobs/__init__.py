"""The chapter workflows of `databricks.yml` (chapter 09): `bundle` reads the jobs and their
tasks, `runner` runs one locally task by task (`python -m utils.jobs retraining`)."""
