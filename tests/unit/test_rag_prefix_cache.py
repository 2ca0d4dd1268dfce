"""`PromptPrefixCache` on the real Gemma model: a prompt that starts like an earlier one (not
the last one) gets the earlier state back, and the model still continues it correctly."""

from __future__ import annotations

import pytest

from utils.rag.prefix_cache import PromptPrefixCache, common_prefix_length

INSTRUCTIONS = {
    "counting": "You are a careful assistant that continues number sequences. " * 8,
    "letters": "You are a patient teacher who recites the alphabet to children. " * 8,
}


def test_common_prefix_length():
    assert common_prefix_length([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix_length([], [1]) == 0
    assert common_prefix_length([7, 8], [7, 8]) == 2


@pytest.fixture(scope="module")
def llama():
    from llama_cpp import Llama

    from utils.rag.llm import gguf_file

    model = Llama(model_path=str(gguf_file()), n_ctx=1024, n_threads=1, verbose=False, seed=0)
    yield model
    model.close()


def complete(llama, instructions: str, task: str) -> str:
    prompt = INSTRUCTIONS[instructions] + "\n" + task
    return llama.create_completion(prompt, max_tokens=3, temperature=0)["choices"][0]["text"]


@pytest.mark.integration
def test_an_earlier_prompt_start_is_restored_and_continued_correctly(llama):
    cache = PromptPrefixCache.attach(llama, capacity=2)
    assert PromptPrefixCache.attach(llama) is cache  # one cache per model
    complete(llama, "counting", "1, 2, 3, 4, 5,")
    complete(llama, "letters", "A, B, C, D, E,")
    assert cache.restored_tokens == 0  # the two share no long start
    tokens = {name: llama.tokenize((text + "\n").encode()) for name, text in INSTRUCTIONS.items()}
    switch = common_prefix_length(tokens["counting"], tokens["letters"])  # read either way

    assert complete(llama, "counting", "11, 12, 13, 14, 15,").strip().startswith("16")
    counting_restored = cache.restored_tokens
    assert counting_restored >= len(tokens["counting"]) - switch - 1  # not read again
    assert complete(llama, "letters", "K, L, M, N, O,").strip().startswith("P")
    assert cache.restored_tokens - counting_restored >= len(tokens["letters"]) - switch - 1
    assert len(cache.states) <= 2


@pytest.mark.integration
def test_a_short_shared_start_is_not_worth_a_restore(llama):
    cache = PromptPrefixCache.attach(llama)
    cache.states.clear()
    before = cache.restored_tokens
    llama.create_completion("Q: 1, 2, 3, 4, 5,", max_tokens=2, temperature=0)
    llama.create_completion("Hello there, friend.", max_tokens=2, temperature=0)
    llama.create_completion("Q: 7, 8, 9,", max_tokens=2, temperature=0)
    assert cache.restored_tokens == before  # under min_gain tokens in common


class FailingLlama:
    """Stands in for a model whose decode fails mid-prompt (no `_ctx`: a save would raise)."""

    input_ids: list[int] = [1, 2, 3]
    n_tokens = 3

    def generate(self, tokens):
        yield 7
        raise RuntimeError("llama_decode returned -1")


def test_nothing_is_saved_after_a_failed_generation():
    llama = FailingLlama()
    cache = PromptPrefixCache(llama)
    with pytest.raises(RuntimeError, match="llama_decode"):
        list(llama.generate([1, 2, 3, 4]))
    assert not cache.states
