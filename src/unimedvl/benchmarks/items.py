"""What a benchmark reader yields: one question of a publisher's file, before it becomes a Record.

A reader knows one publisher's layout (field names, splits, where the images are); it yields a
:class:`BenchmarkItem` per question and appends a :class:`~unimedvl.data.records.Problem` for
each question or file it cannot use, so that one bad row never stops the rest.
:mod:`unimedvl.benchmarks.convert` turns items into our JSONL records.

Conventions shared by the readers (as the published protocols count, see the fact sheet cited in
each reader's docstring):

* answer types are ``closed``, ``open`` or ``multiple_choice``. Closed vs open comes from the
  publisher's ``answer_type`` where the source has one (case and spaces normalised; a closed
  answer need not be yes/no); without one, a question is closed exactly when its answer is yes
  or no (:func:`yes_no_rule`, the rule of MultiMedEval and MedEvalKit).
* a question's id in our records is ``<benchmark>-<split>-<publisher id>``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

CLOSED, OPEN, MULTIPLE_CHOICE = "closed", "open", "multiple_choice"
ANSWER_TYPES = (CLOSED, OPEN, MULTIPLE_CHOICE)

# Publisher spellings of answer_type: VQA-RAD and SLAKE write CLOSED / OPEN; LLaVA-Med's PathVQA
# files also use "yes/no" (closed) and "other" / "number" (open).
_PUBLISHED_TYPES = {"closed": CLOSED, "yes/no": CLOSED, "open": OPEN, "other": OPEN, "number": OPEN}


@dataclass(frozen=True)
class ImageSource:
    """Where one image of a question comes from; exactly one field is set."""

    path: str | None = None  # an image file, absolute or relative to the benchmark folder
    data: bytes | None = None  # encoded image bytes (a parquet cell, a decoded base64 cell)
    ref: str | None = None  # VLMEvalKit: the ``index`` of the row whose image this row reuses

    def __post_init__(self) -> None:
        if sum(v is not None for v in (self.path, self.data, self.ref)) != 1:
            raise ValueError("ImageSource needs exactly one of path, data, ref")


@dataclass
class BenchmarkItem:
    """One question as the publisher ships it, in our vocabulary."""

    benchmark: str  # registry name, e.g. "vqa-rad"
    split: str  # the split it belongs to, e.g. "test"
    question_id: str  # the publisher's id (or the row position when the source has none)
    question: str  # the question text as published
    answer: str | None  # gold answer (multiple choice: the option letter); None when unpublished
    answer_type: str  # closed | open | multiple_choice
    images: tuple[ImageSource, ...]  # the question's image(s), in order
    source: str  # "file:row" where it was read, for messages
    options: dict[str, str] | None = None  # multiple choice: letter -> option text, in letter order
    hint: str | None = None  # VLMEvalKit ``hint`` column (context shown before the question)
    category: str | None = None  # the publisher's question category (question_type, content_type, ...)
    modality: str | None = None  # imaging modality where the source names it
    fields: dict[str, Any] = field(default_factory=dict)  # other publisher fields kept for breakdowns


def clean_answer(text: str) -> str:
    """Lowercase, punctuation to spaces, spaces collapsed: the form the yes/no rule compares."""
    return " ".join(re.sub(r"[^\w\s]", " ", str(text).lower()).split())


def yes_no_rule(answer: str | None) -> str:
    """``closed`` when the answer is yes or no (after :func:`clean_answer`), else ``open``."""
    return CLOSED if answer is not None and clean_answer(answer) in ("yes", "no") else OPEN


def answer_type_of(published: Any, answer: str | None) -> str:
    """closed/open from a publisher's ``answer_type`` (case and spaces normalised), else the yes/no rule."""
    if isinstance(published, str):
        key = " ".join(published.split()).lower()
        if key in _PUBLISHED_TYPES:
            return _PUBLISHED_TYPES[key]
    return yes_no_rule(answer)


def text_field(value: Any) -> str | None:
    """A cell as stripped text, None when absent or empty (NaN-like cells included)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    text = str(value).strip()
    return text or None


def letter_of(answer: str, options: dict[str, str]) -> str | None:
    """The option letter a gold answer names: the letter itself ("B", "(B)") or the option's text."""
    letter = answer.strip().strip("()").strip()
    if letter.upper() in options and len(letter) == 1:
        return letter.upper()
    wanted = clean_answer(answer)
    matches = [k for k, v in options.items() if clean_answer(v) == wanted]
    return matches[0] if len(matches) == 1 else None
