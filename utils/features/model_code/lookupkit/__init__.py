"""Code the chapter 11 lookup model carries with it through `code_paths`.

MLflow copies this folder into the model's `code/` directory and puts that directory on
`sys.path` when the model loads, so a scoring server imports it as `lookupkit` without the
rest of this repository. Keep it self-contained: no imports from `utils`.
"""
