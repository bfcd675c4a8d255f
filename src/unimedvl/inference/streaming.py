"""Token ids to text while they are being generated, one piece per token, whole characters only.

A byte-level BPE token may end in the middle of a UTF-8 character (the Qwen2 vocabulary splits
rare characters and emoji into byte tokens), and decoding such a prefix gives U+FFFD where the
character will be. :class:`TextStream` holds those trailing bytes back until the character is
complete, so every piece it hands out is final text, and the pieces joined are exactly
``tokenizer.decode(all_ids)``::

    stream = TextStream(tokenizer.decode)
    for token in tokens:              # e.g. from Request(on_token=...)
        send(stream.push(token))      # "" while a character is incomplete
    send(stream.finish())             # whatever was still held back
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"  # what a decoder writes for bytes that are not (yet) a whole character


class TextStream:
    """Incremental decoding of one answer (see the module docstring)."""

    def __init__(self, decode: Callable[[Sequence[int]], str]):
        """decode: ids -> text, a byte-level decoder (``Tokenizer.decode``)."""
        self._decode = decode
        # Tokens since the last character boundary, and how much of their text went out. Only
        # this window is re-decoded at each token: the text before a boundary can no longer change.
        self._pending: list[int] = []
        self._sent = 0

    def push(self, token: int) -> str:
        """The new final text that ``token`` completes ("" if it ends inside a character)."""
        self._pending.append(token)
        text = self._decode(self._pending)
        # Trailing U+FFFD may be an unfinished character: later bytes can turn it into one.
        stable = len(text.rstrip(REPLACEMENT))
        piece = text[self._sent : stable]
        if stable == len(text):
            self._pending, self._sent = [], 0
        else:
            self._sent = max(self._sent, stable)
        return piece

    def finish(self) -> str:
        """What is still held back: bytes that never became a character come out as U+FFFD."""
        piece = self._decode(self._pending)[self._sent :] if self._pending else ""
        self._pending, self._sent = [], 0
        return piece
