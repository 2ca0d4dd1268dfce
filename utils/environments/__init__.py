"""A model's environment (chapter 07): `requirements` pins and restores what a model needs
(pip, conda, bundled wheels, an offline `uv` environment), `targets` writes the files of each
deployment target (Dockerfile, Kubernetes, Azure ML), `weather` is the chapter's rain model
with its ONNX conversion."""
