"""Batch and streaming scoring with Spark (chapters 02-03): `scoring` checks a table against a
model's signature and times Spark actions; reading and writing tables and streams is
`utils.tables`."""
