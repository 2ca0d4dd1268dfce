"""Check a JSON grammar against the model's likeliest tokens first, not its whole vocabulary.

llama-cpp-python puts the grammar first in its sampler chain, so for every generated token the
grammar tests all 262,144 tokens of Gemma's vocabulary (about 35 ms per token on one core here,
as long as the model's forward pass). Sampling keeps only the likeliest tokens anyway (greedy
keeps one, top-k 40), and one of the few hundred likeliest is almost always allowed by the
grammar. `TopCandidatesGrammarSampler` tests those first and the whole vocabulary only when none
of them is allowed, then hands the allowed candidates to llama-cpp-python's own sampler chain
(penalties, top-k/top-p/min-p, temperature, greedy or random choice). The reply still always
matches the grammar; at temperature 0 it is the same reply, token for token.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

# Candidates tested before the whole vocabulary: far more than top-k keeps (40), and testing
# 1,024 tokens costs about 0.1 ms.
DEFAULT_CANDIDATES = 1024


class TopCandidatesGrammarSampler:
    """Samples one token under a grammar, testing the `candidates` likeliest tokens first.

    Stands in for llama-cpp-python's `LlamaSampler` where `Llama.sample` calls
    `self._sampler.sample(ctx, idx)`; `chain` is the sampler llama-cpp-python built without the
    grammar and `grammar` a `LlamaSampler` holding only the grammar."""

    def __init__(self, chain: Any, grammar: Any, n_vocab: int,
                 candidates: int = DEFAULT_CANDIDATES):
        import llama_cpp

        self.chain = chain
        self.grammar = grammar
        self.n_vocab = n_vocab
        self.candidates = min(candidates, n_vocab)
        self.whole_vocabulary_passes = 0  # tokens for which no candidate was allowed
        self.tokens = 0
        dtype = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)
        assert dtype.itemsize == ctypes.sizeof(llama_cpp.llama_token_data)
        self._data = np.zeros(n_vocab, dtype=dtype)  # reused: one buffer per generation
        self._llama_cpp = llama_cpp

    def sample(self, ctx: Any, idx: int) -> int:
        llama_cpp = self._llama_cpp
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx.ctx, idx),
                                       shape=(self.n_vocab,))
        top = np.argpartition(logits, -self.candidates)[-self.candidates:]
        array = self._allowed(logits, top)
        if not np.isfinite(self._data["logit"][: array.size]).any():
            self.whole_vocabulary_passes += 1
            array = self._allowed(logits, None)
        llama_cpp.llama_sampler_apply(self.chain.sampler, ctypes.byref(array))
        token = int(self._data["id"][array.selected])
        llama_cpp.llama_sampler_accept(self.grammar.sampler, token)
        llama_cpp.llama_sampler_accept(self.chain.sampler, token)
        self.tokens += 1
        return token

    def _allowed(self, logits: np.ndarray, ids: np.ndarray | None):
        """The tokens `ids` (all when None) with the logits of those the grammar rejects
        set to -inf, as the `llama_token_data_array` llama.cpp's samplers work on."""
        llama_cpp = self._llama_cpp
        size = self.n_vocab if ids is None else ids.size
        data = self._data[:size]
        data["id"] = np.arange(size) if ids is None else ids
        data["logit"] = logits if ids is None else logits[ids]
        data["p"] = 0.0
        array = llama_cpp.llama_token_data_array(
            data=data.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)),
            size=size, selected=-1, sorted=False,
        )
        llama_cpp.llama_sampler_apply(self.grammar.sampler, ctypes.byref(array))
        return array

    def close(self) -> None:
        self.chain.close()
        self.grammar.close()


def sample_grammar_on_top_candidates(llama: Any, candidates: int = DEFAULT_CANDIDATES) -> None:
    """Make `llama` (a `llama_cpp.Llama`) sample under a grammar with
    `TopCandidatesGrammarSampler` (the latest is `llama.grammar_sampler`); generation without a
    grammar is unchanged."""
    if candidates < 1:
        raise ValueError(f"candidates must be at least 1, got {candidates}")
    if getattr(llama, "grammar_sampler_candidates", None) is not None:
        return
    from llama_cpp import _internals

    build_chain = llama._init_sampler

    def init_sampler(*args: Any, grammar: Any = None, **kwargs: Any) -> Any:
        if grammar is None or kwargs.get("logits_processor"):
            # A logits processor (min_tokens, logit_bias) indexes the whole vocabulary.
            return build_chain(*args, grammar=grammar, **kwargs)
        chain = build_chain(*args, **kwargs)
        grammar_only = _internals.LlamaSampler()
        grammar_only.add_grammar(llama._model, grammar)
        llama.grammar_sampler = TopCandidatesGrammarSampler(chain, grammar_only,
                                                            llama.n_vocab(), candidates)
        return llama.grammar_sampler

    llama._init_sampler = init_sampler
    llama.grammar_sampler_candidates = candidates
    llama.grammar_sampler = None


