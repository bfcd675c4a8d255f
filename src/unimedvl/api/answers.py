"""A decoded answer as OpenAI message fields: ``content``, and ``reasoning_content`` in thinking mode.

Without thinking mode the content is the decoded text itself (``Result.text``). In thinking mode
the model writes ``<think> reasoning </think> answer``; :class:`ThinkSplitter` routes the text
before ``</think>`` to ``reasoning_content`` and the rest to ``content``, both stripped of
surrounding whitespace like :func:`unimedvl.inference.inferencer.split_thinking`. The split is
decided from the text's start, so it can run while tokens stream: an answer that does not open
with ``<think>`` is all content. Streaming and non-streaming answers go through the same
splitter, so the deltas of a stream join to exactly the message the same request gets whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from unimedvl.inference.streaming import TextStream

OPEN, CLOSE = "<think>", "</think>"
CONTENT, REASONING = "content", "reasoning_content"

Piece = tuple[str, str]  # (field, text)


def _held_tail(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that could be the start of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class ThinkSplitter:
    """Thinking-mode text, fed piece by piece, out as (field, text) pieces (see the module docstring)."""

    def __init__(self) -> None:
        self._state = "start"  # start (deciding) | reasoning | answer
        self._buffer = ""  # text not given out yet
        self._begun = False  # whether the current field has had non-space text (leading space is dropped)

    def feed(self, text: str) -> list[Piece]:
        """The pieces that are certain after ``text``; a possible ``<think>`` prefix waits for more."""
        self._buffer += text
        out: list[Piece] = []
        while True:
            if self._state == "start":
                head = self._buffer.lstrip()
                if not head or (len(head) < len(OPEN) and OPEN.startswith(head)):
                    return out  # could still become <think>
                if head.startswith(OPEN):
                    self._state, self._buffer = "reasoning", head[len(OPEN) :]
                else:
                    self._state, self._buffer = "answer", head
                self._begun = False
            elif self._state == "reasoning":
                end = self._buffer.find(CLOSE)
                if end < 0:
                    cut = len(self._buffer) - _held_tail(self._buffer, CLOSE)
                    ready, self._buffer = self._buffer[:cut], self._buffer[cut:]
                    out += self._give(REASONING, ready, final=False)
                    return out
                out += self._give(REASONING, self._buffer[:end], final=True)
                self._state, self._buffer, self._begun = "answer", self._buffer[end + len(CLOSE) :], False
            else:
                ready, self._buffer = self._buffer, ""
                out += self._give(CONTENT, ready, final=False)
                return out

    def finish(self) -> list[Piece]:
        """The rest, trailing whitespace dropped (an unclosed reasoning stays reasoning)."""
        if self._state == "start":
            head = self._buffer.strip()
            self._buffer = ""
            return [(CONTENT, head)] if head else []
        field = REASONING if self._state == "reasoning" else CONTENT
        rest, self._buffer = self._buffer, ""
        return self._give(field, rest, final=True)

    def _give(self, field: str, text: str, final: bool) -> list[Piece]:
        """Out with ``text`` minus leading space (before the field's first word) and, unless final, trailing
        space (kept back until a word follows it, so that a field's last whitespace never goes out)."""
        if not self._begun:
            text = text.lstrip()
        if final:
            text = text.rstrip()
        else:
            body = text.rstrip()
            self._buffer = text[len(body) :] + self._buffer
            text = body
        if not text:
            return []
        self._begun = True
        return [(field, text)]


def split_answer(text: str, think: bool) -> dict[str, str]:
    """The message fields of a whole answer."""
    if not think:
        return {CONTENT: text}
    splitter = ThinkSplitter()
    fields = {CONTENT: "", REASONING: ""}
    for field, piece in splitter.feed(text) + splitter.finish():
        fields[field] += piece
    return fields


class AnswerStream:
    """One choice's tokens in, message-field pieces out, whole characters only."""

    def __init__(self, decode: Callable[[Sequence[int]], str], think: bool):
        self._text = TextStream(decode)
        self._splitter = ThinkSplitter() if think else None

    def push(self, token: int) -> list[Piece]:
        """One generated token in; the whole characters it completes, routed to their message field."""
        return self._route(self._text.push(token))

    def finish(self) -> list[Piece]:
        """What was still held back at the end of generation, so no text is lost."""
        pieces = self._route(self._text.finish())
        return pieces + (self._splitter.finish() if self._splitter else [])

    def _route(self, text: str) -> list[Piece]:
        if not text:
            return []
        return self._splitter.feed(text) if self._splitter else [(CONTENT, text)]
