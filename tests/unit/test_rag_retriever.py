"""Chunking, ranking on a tiny corpus with the real MiniLM model, saving and loading."""

from __future__ import annotations

import pytest

from utils.rag.retriever import (
    CORPUS_DIR,
    Document,
    Retriever,
    chunk_corpus,
    chunk_document,
    load_documents,
    parse_document,
)

pytestmark = pytest.mark.unit

SENTENCE = "This sentence has exactly eight words in it."  # 8 words


def test_one_passage_per_paragraph_with_stable_ids():
    doc = parse_document("doc", f"# Title\n\n{SENTENCE} {SENTENCE}\n\n{SENTENCE} {SENTENCE}\n")
    passages = chunk_document(doc, max_words=40, min_words=5)
    assert [p.passage_id for p in passages] == ["doc:0", "doc:1"]
    assert all(p.title == "Title" and p.doc_id == "doc" for p in passages)
    assert "\n" not in passages[0].text  # wrapped lines are joined


def test_long_paragraph_is_cut_at_sentence_ends():
    doc = Document("d", "T", " ".join([SENTENCE] * 5))  # 40 words
    passages = chunk_document(doc, max_words=20, min_words=0)
    assert [len(p.text.split()) for p in passages] == [16, 16, 8]
    assert all(p.text.endswith(".") for p in passages)


def test_sentence_longer_than_a_passage_is_cut_by_words():
    doc = Document("d", "T", " ".join(f"w{i}" for i in range(25)))
    assert [len(p.text.split()) for p in chunk_document(doc, max_words=10, min_words=0)] == [
        10, 10, 5]


def test_short_fragment_joins_the_passage_before():
    doc = Document("d", "T", f"{SENTENCE} {SENTENCE}\n\nSee also aliases.")
    passages = chunk_document(doc, max_words=40, min_words=5)
    assert len(passages) == 1 and passages[0].text.endswith("See also aliases.")


def test_bad_documents_and_settings():
    with pytest.raises(ValueError, match="Title"):
        parse_document("x", "no title here")
    with pytest.raises(ValueError, match="no text"):
        parse_document("x", "# Only a title")
    with pytest.raises(ValueError, match="max_words"):
        chunk_document(Document("d", "T", "text"), max_words=5)
    with pytest.raises(FileNotFoundError, match=r"\*\.md"):
        load_documents(CORPUS_DIR / "missing")


def test_project_corpus_size():
    documents = load_documents()
    passages = chunk_corpus(documents)
    assert 30 <= len(documents) <= 60
    assert all(len(p.text.split()) <= 80 for p in passages)


TINY = [
    Document("aliases", "Model aliases", "An alias is a movable name for one model version, "
             "like champion. Rolling back means moving the alias back."),
    Document("streaming", "Streaming", "Structured Streaming reads new files from a landing "
             "folder and keeps a checkpoint of processed offsets."),
    Document("limits", "Serving limits", "A serving request may be at most 16 MB and take at "
             "most 297 seconds."),
]


@pytest.fixture(scope="module")
def tiny_retriever():
    return Retriever.build(chunk_corpus(TINY))


@pytest.mark.parametrize("question, best", [
    ("How do I roll back to the previous model version?", "aliases:0"),
    ("What does the checkpoint of a stream keep?", "streaming:0"),
    ("How big may a request to an endpoint be?", "limits:0"),
])
def test_ranking_puts_the_answering_passage_first(tiny_retriever, question, best):
    ranked = tiny_retriever.search(question, k=3)
    assert ranked[0][0].passage_id == best
    scores = [score for _, score in ranked]
    assert scores == sorted(scores, reverse=True) and len(ranked) == 3


def test_search_errors(tiny_retriever):
    with pytest.raises(ValueError, match="empty"):
        tiny_retriever.search("  ")
    with pytest.raises(ValueError, match="k must"):
        tiny_retriever.search("alias", k=0)


def test_save_and_load_give_the_same_ranking(tiny_retriever, tmp_path):
    loaded = Retriever.load(tiny_retriever.save(tmp_path / "r"), tiny_retriever.embedder)
    question = "What is an alias?"
    assert [p.passage_id for p, _ in loaded.search(question)] == [
        p.passage_id for p, _ in tiny_retriever.search(question)]
    with pytest.raises(FileNotFoundError, match="not a saved retriever"):
        Retriever.load(tmp_path / "empty")
