"""`TopCandidatesGrammarSampler` on the real Gemma model: the same grammar-valid reply as
llama-cpp-python's whole-vocabulary grammar, and a whole-vocabulary pass when no candidate fits."""

from __future__ import annotations

import json

import pytest

from utils.rag.grammar_sampler import sample_grammar_on_top_candidates

JUDGE_SCHEMA = {
    "type": "object",
    "properties": {"result": {"type": "string", "enum": ["yes", "no"]},
                   "rationale": {"type": "string", "maxLength": 120}},
    "required": ["result", "rationale"],
}
JUDGE_PROMPT = (
    "You are a judge. Is the response correct?\nQuestion: What does the model registry keep?\n"
    "Response: Versions of registered models and their aliases.\n"
    "Reply in JSON with result (yes or no) and rationale.\n"
)


def load_model():
    from llama_cpp import Llama

    from utils.rag.llm import gguf_file

    return Llama(model_path=str(gguf_file()), n_ctx=512, n_threads=1, verbose=False, seed=0)


@pytest.fixture(scope="module")
def models():
    whole_vocabulary, top_candidates = load_model(), load_model()
    sample_grammar_on_top_candidates(top_candidates)
    yield whole_vocabulary, top_candidates
    whole_vocabulary.close()
    top_candidates.close()


def reply(llama, prompt: str, grammar, temperature: float, max_tokens: int = 48) -> str:
    llama.reset()
    out = llama.create_completion(prompt, max_tokens=max_tokens, temperature=temperature,
                                  grammar=grammar, seed=7)
    return out["choices"][0]["text"]


@pytest.mark.integration
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_same_reply_as_the_whole_vocabulary_grammar(models, temperature):
    from llama_cpp import LlamaGrammar

    grammar = LlamaGrammar.from_json_schema(json.dumps(JUDGE_SCHEMA), verbose=False)
    whole_vocabulary, top_candidates = models
    expected = reply(whole_vocabulary, JUDGE_PROMPT, grammar, temperature)
    got = reply(top_candidates, JUDGE_PROMPT, grammar, temperature)
    assert got == expected
    assert json.loads(got)["result"] in {"yes", "no"}
    sampler = top_candidates.grammar_sampler
    assert sampler.tokens > 5 and sampler.whole_vocabulary_passes < sampler.tokens


@pytest.mark.integration
def test_a_logits_processor_still_sees_the_whole_vocabulary(models):
    from llama_cpp import LlamaGrammar, LogitsProcessorList

    grammar = LlamaGrammar.from_json_schema(json.dumps(JUDGE_SCHEMA), verbose=False)
    _, top_candidates = models
    seen = []

    def record_size(input_ids, scores):
        seen.append(len(scores))
        return scores

    top_candidates.grammar_sampler = None
    top_candidates.reset()
    top_candidates.create_completion(JUDGE_PROMPT, max_tokens=4, temperature=0.0,
                                     grammar=grammar,
                                     logits_processor=LogitsProcessorList([record_size]))
    assert seen and set(seen) == {top_candidates.n_vocab()}
    assert top_candidates.grammar_sampler is None  # llama-cpp-python's own chain ran


@pytest.mark.integration
def test_no_allowed_candidate_falls_back_to_the_whole_vocabulary():
    from llama_cpp import LlamaGrammar

    llama = load_model()
    try:
        sample_grammar_on_top_candidates(llama, candidates=2)
        grammar = LlamaGrammar.from_string('root ::= "zebra quagga"', verbose=False)
        text = reply(llama, "1, 2, 3, 4,", grammar, temperature=0.0, max_tokens=16)
        assert text == "zebra quagga"  # what the model would never say after "1, 2, 3, 4,"
        assert llama.grammar_sampler.whole_vocabulary_passes >= 1
    finally:
        llama.close()


def test_candidates_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        sample_grammar_on_top_candidates(object(), candidates=0)
