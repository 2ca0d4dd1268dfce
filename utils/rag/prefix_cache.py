"""Keep llama.cpp's memory of recent prompts, so a prompt that starts like an earlier one skips
re-reading its start.

llama-cpp-python reuses the previous prompt's tokens when a new prompt starts with them; it
remembers one prompt. An evaluation alternates prompts: the chatbot's, then each judge's, whose
long fixed instructions (MLflow's judge template, ~230 tokens) come before the row's values.
`PromptPrefixCache` saves the model's key/value cache of the last few prompts (a few MB each,
`llama_state_seq_get_data`) and puts back the one sharing the longest start with a new prompt, so
a judge call reads only its row's values. Reading a judge's ~300 prompt tokens takes about
1.3 s on one CPU core here; saving or restoring a state takes milliseconds.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


class PromptPrefixCache:
    """Wraps one `llama_cpp.Llama`'s `generate`: before a prompt, restore the saved state that
    shares the longest start with it (when that beats what the context holds by `min_gain`
    tokens); after it, save the context's state, in place of saved states that are mostly its
    start (the same judge on an earlier row). Keeps the `capacity` most recently used."""

    def __init__(self, llama: Any, capacity: int = 6, min_gain: int = 32):
        self.llama = llama
        self.capacity = capacity
        self.min_gain = min_gain
        self.states: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
        self.restored_tokens = 0  # prompt tokens not re-read thanks to a restore
        self._generate = llama.generate
        llama.generate = self.generate

    @classmethod
    def attach(cls, llama: Any, **options: Any) -> PromptPrefixCache:
        """The cache of `llama`, created on first use (the server hands handlers its model)."""
        cache = getattr(llama, "prompt_prefix_cache", None)
        if cache is None:
            cache = cls(llama, **options)
            llama.prompt_prefix_cache = cache
        return cache

    def generate(self, tokens: Sequence[int], *args: Any, **kwargs: Any) -> Iterator[int]:
        tokens = list(tokens)
        self._restore_longest_match(tokens)
        finished = False
        try:
            yield from self._generate(tokens, *args, **kwargs)
            finished = True
        except GeneratorExit:  # the caller stopped early (stop string, token limit)
            finished = True
            raise
        finally:
            if finished:  # not after an error: the context may hold half a batch
                self._save()

    def _restore_longest_match(self, tokens: list[int]) -> None:
        held = common_prefix_length(self.llama.input_ids[: self.llama.n_tokens], tokens)
        best, best_length = None, held
        for key in self.states:
            length = common_prefix_length(key, tokens)
            if length > best_length:
                best, best_length = key, length
        if best is None or best_length - held < self.min_gain:
            return
        state = self.states[best]
        self.states.move_to_end(best)
        import llama_cpp

        buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if llama_cpp.llama_state_seq_set_data(self.llama._ctx.ctx, buffer, len(state), 0) == 0:
            self.llama.reset()  # refused: read the whole prompt as llama-cpp-python would
            return
        self.llama.input_ids[: len(best)] = best
        self.llama.n_tokens = len(best)
        self.llama._requires_eval = True  # logits are stale until the next token is decoded
        self.restored_tokens += best_length - held

    def _save(self) -> None:
        import llama_cpp

        n_tokens = self.llama.n_tokens
        if n_tokens == 0:
            return
        ctx = self.llama._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, buffer, size, 0)
        key = tuple(int(t) for t in self.llama.input_ids[:n_tokens])
        for old in [k for k in self.states if 2 * common_prefix_length(k, key) >= len(k)]:
            del self.states[old]  # mostly this prompt's start: the new state replaces it
        self.states[key] = ctypes.string_at(buffer, written)  # a memcpy (slicing makes ints)
        self.states.move_to_end(key)
        while len(self.states) > self.capacity:
            self.states.popitem(last=False)
