"""Incremental detokenization with stop strings, one per sequence.

Text is released as soon as it is final: never half a UTF-8 character (decoders
show it as U+FFFD until complete), never a tail that could still grow into a stop
string. A matched stop string ends the sequence and is not part of the text.
"""

from __future__ import annotations

from infleet_worker.generate.tokenizer import Tokenizer


class Detokenizer:
    def __init__(self, tokenizer: Tokenizer, stop: tuple[str, ...]) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.longest = max((len(s) for s in self.stop), default=0)
        self.text = ""  # decoded so far, kept only to match stop strings
        self.emitted = 0  # characters of text already released
        self._prefix = 0  # token offsets of vLLM's incremental decoding
        self._read = 0

    def _decode_new(self, ids: list[int]) -> str:
        """Text the newest tokens add, decoded with a few tokens of left context."""
        before = self.tokenizer.decode(ids[self._prefix : self._read])
        after = self.tokenizer.decode(ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(ids)
            return after[len(before) :]
        return ""

    def update(self, output_ids: list[int]) -> tuple[str, bool]:
        """(text to release now, whether a stop string matched)."""
        new = self._decode_new(output_ids)
        if not self.stop:  # nothing to match or hold back: release at once
            return new, False
        old = len(self.text)
        self.text += new
        start = max(0, old - self.longest + 1)
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            return self.flush(), True
        end = max(self.emitted, len(self.text) - self._held_tail())
        out, self.emitted = self.text[self.emitted : end], end
        return out, False

    def _held_tail(self) -> int:
        for k in range(min(self.longest - 1, len(self.text)), 0, -1):
            tail = self.text[-k:]
            if any(s.startswith(tail) for s in self.stop):
                return k
        return 0

    def flush(self) -> str:
        out, self.emitted = self.text[self.emitted :], len(self.text)
        return out
