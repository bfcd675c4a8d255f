"""The prompt each benchmark's questions are asked with (written down, and recorded in statistics.json).

Two templates, the ones the public evaluators use (fact sheet section 9):

``short_answer`` (VQA-RAD, SLAKE, PathVQA, LLaVA-Med files)
    ``{question}\\nAnswer the question using a single word or phrase.`` - the post-prompt of
    lmms-eval's SLAKE task and of LLaVA-1.5-style VQA evaluation, used for closed and open
    questions alike so that the model is not told which kind a question is.
``multiple_choice`` (OmniMedVQA, VLMEvalKit TSVs such as GMAI-MMBench)
    ``[Hint: {hint}\\n]Question: {question}\\nOptions:\\nA. {A}\\nB. {B}\\n...`` then
    ``Answer with the option's letter from the given choices directly.`` - VLMEvalKit's
    ImageMCQDataset layout with the letter instruction its model wrappers (and MedEvalKit) use.

The image goes first (``<image>`` before the text), as VLMEvalKit and LLaVA-Med place it.
"""

from __future__ import annotations

from dataclasses import dataclass

from unimedvl.benchmarks.items import BenchmarkItem


@dataclass(frozen=True)
class PromptTemplate:
    """A named prompt layout; ``text`` is the human-readable form recorded in statistics.json."""

    name: str
    text: str


SHORT_ANSWER_SUFFIX = "Answer the question using a single word or phrase."
LETTER_SUFFIX = "Answer with the option's letter from the given choices directly."

SHORT_ANSWER = PromptTemplate("short_answer", "{question}\n" + SHORT_ANSWER_SUFFIX)
MULTIPLE_CHOICE = PromptTemplate(
    "multiple_choice",
    "Hint: {hint}   (this line only when the question has a hint)\nQuestion: {question}\n"
    "Options:\nA. {option A}\nB. {option B}\n...   (one line per option)\n" + LETTER_SUFFIX,
)
TEMPLATES = {t.name: t for t in (SHORT_ANSWER, MULTIPLE_CHOICE)}


def render(template: PromptTemplate, item: BenchmarkItem) -> str:
    """The question text given to the model for ``item`` (without the image placeholder)."""
    if template.name == SHORT_ANSWER.name:
        return f"{item.question}\n{SHORT_ANSWER_SUFFIX}"
    lines = [f"Hint: {item.hint}"] if item.hint else []
    lines.append(f"Question: {item.question}")
    if item.options:
        lines.append("Options:")
        lines += [f"{letter}. {text}" for letter, text in item.options.items()]
    lines.append(LETTER_SUFFIX)
    return "\n".join(lines)
