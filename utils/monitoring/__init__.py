"""Inference tables and what is built on them (chapter 09): `schema` names the columns,
`inference_table` writes scored requests and merges late labels, `drift` compares production
features with the training data, `retraining` trains a candidate on labelled production data
and hands it to the gate."""
