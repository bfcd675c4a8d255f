"""The published scoring rules of the medical VQA harnesses, by name (``--protocol``).

Each protocol decides, per question, whether an answer is *correct* (what the pooled accuracy and
the paper cell count); recall and exact match are reported beside it under every protocol. The
rules are written anew from the harnesses' scoring files (cited per protocol); where a harness
normalises text with a helper not reproduced here, the nearest rule of this module is used and
the difference is stated.

``unimedvl`` (the default)
    closed yes/no: the prediction's *first word* (after normalisation: case, punctuation, articles,
    number words; yes/no synonyms such as "yeah" / "false"; Chinese 是 / 是的 / 对 and 否 / 不是 /
    不 for SLAKE zh), so "There is no evidence of that" is wrong for the gold answer "no"; any other
    closed answer ("left", "CT"): normalised equality, so "The left lung" is wrong for "Left"; open:
    normalised exact match. Multiple choice: VLMEvalKit's exact matching as its default path ran
    before the near-the-end rule (:mod:`unimedvl.metrics.choice_matching`).
``llava-med``
    ``microsoft/LLaVA-Med`` ``llava/eval/run_eval_batch.py`` (``evaluate``; the text normalised by
    ``eval_metrics/glossary.py`` ``normalize_word``, approximated here by the normalisation above):
    closed (answer_type CLOSED): correct when the normalised gold answer is a substring of the
    normalised prediction ("no" is found in "there is no evidence"); open: the same substring test
    is its "open accuracy" (recall, from ``eval_metrics/evaluate_metrics.py`` ``calculate_f1score``,
    is reported beside it).
``multimedeval``
    ``corentin-ryr/MultiMedEval`` ``multimedeval/task_families.py`` ``VQA.evaluate``: a question is
    closed exactly when its gold answer is yes or no; the answers become sets of tokens (lowercase,
    punctuation removed; its ``clean_str`` also lemmatises with WordNet, which is not reproduced);
    closed: correct when at least 0.4 of the gold tokens are in the prediction, the gold "no" counting
    as {no, not}; open: correct when the token recall is at least 0.75.
``medevalkit``
    ``alibaba-damo-academy/MedEvalKit`` ``utils/VQA_RAD/VQA_RAD.py`` ``cal_metrics`` (SLAKE and
    PathVQA alike) with ``utils/utils.py`` ``parse_response``, ``judge_judgement`` and
    ``judge_open_end_vqa``: the response is lowercased and cut after "answer is" / "answer:" (and
    the like); a question is closed exactly when its gold answer is yes or no, and correct when
    exactly one of "yes" / "no" occurs in the response (as a substring) and the gold answer does;
    any other question: correct on exact equality of the response and the lowercased gold answer
    ("total metrics" acc counts open answers by this exact match).
``vlmevalkit``
    ``open-compass/VLMEvalKit`` ``vlmeval/utils/matching_util.py`` ``can_infer_option`` /
    ``can_infer_text`` as they are now: a single option letter counts only among the last five
    tokens; else "the answer is X" / "correct answer is X" (A-D); else a lone Z; the option-text
    rule is skipped for an answer more than twice as long as all option texts together. Closed and
    open questions are scored as by ``unimedvl``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from unimedvl.errors import ConfigError
from unimedvl.metrics import text as T
from unimedvl.metrics.choice_matching import NO_ANSWER, REFUSALS, Judge, choose

DEFAULT_PROTOCOL = "unimedvl"


@dataclass(frozen=True)
class Protocol:
    """One harness's rules: closed(pred, gold), open(pred, gold) -> correct, choice(pred, options) -> (letter, how)."""

    name: str
    source: str  # the scoring file(s) it follows
    closed: Callable[[str, str], bool]
    open: Callable[[str, str], bool]
    choice: Callable[[str, Mapping[str, str]], tuple[str, str]]


# -- llava-med ------------------------------------------------------------------------------------


def _llava_hit(pred: str, gold: str) -> bool:
    return T.normalize_answer(gold) in T.normalize_answer(pred)


# -- multimedeval ---------------------------------------------------------------------------------

_PUNCT = re.compile(r"[^\w\s]|_")


def _tokens(text: str) -> set[str]:
    return set(_PUNCT.sub(" ", str(text).lower()).split())


def _mme_recall(pred: str, gold: str, closed: bool = False) -> float:
    g, p = _tokens(gold), _tokens(pred)
    if closed and g == {"no"}:
        g = {"no", "not"}
    return len(g & p) / len(g) if g else 0.0


# -- medevalkit -----------------------------------------------------------------------------------

_MEK_MARKERS = (
    "**answer**:",
    "**answer**",
    "*answer*:",
    "**answer:**",
    "answer is",
    "answer:",
    "答案:",
    "final answer",
    "final answer is",
)


def medevalkit_response(response: str) -> str:
    """MedEvalKit's parse_response on the lowercased, stripped response: the boxed / <answer> content,
    then the text after the last answer marker (not stripped again, as MedEvalKit leaves it)."""
    text = str(response).lower().strip()
    boxed = re.search(r"\\boxed\{([^{}]*)\}", text)
    tagged = re.search(r"<answer>(.*?)</answer>", text, re.S)
    text = boxed.group(1) if boxed else tagged.group(1) if tagged else text
    for marker in _MEK_MARKERS:
        if marker in text:
            text = text.split(marker)[-1]
    return text


def _mek_closed(pred: str, gold: str) -> bool:  # judge_judgement: newlines and full stops dropped first
    response, answer = medevalkit_response(pred).replace("\n", "").replace(".", ""), gold.lower().strip()
    return (("yes" in response) != ("no" in response)) and answer in response


def _mek_exact(pred: str, gold: str) -> bool:  # judge_open_end_vqa's em
    return medevalkit_response(pred) == gold.lower().strip()


# -- vlmevalkit (current) -------------------------------------------------------------------------

_ANSWER_IS = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")


def vlmevalkit_choice(
    prediction: str, options: Mapping[str, str], question: str = "", judge: Judge | None = None
) -> tuple[str, str]:
    """(letter, how) by VLMEvalKit's current matching (see the module docstring)."""
    text = prediction.strip()
    if any(phrase in text for phrase in REFUSALS):
        return NO_ANSWER, "letter"
    spaced = text
    for ch in ".()[],:;!*#{}":
        spaced = spaced.replace(ch, " ")
    tokens = spaced.split()
    found = [letter for letter in options if letter in tokens]
    if len(found) == 1 and tokens.index(found[0]) > len(tokens) - 5:
        return found[0], "letter"
    if not found and NO_ANSWER in tokens:
        return NO_ANSWER, "letter"
    match = _ANSWER_IS.search(text)
    if match and match.group(1).upper() in options:
        return match.group(1).upper(), "letter"
    lower = text.lower()
    if len(lower) <= 2 * sum(len(str(v)) for v in options.values()):
        hits = [k for k, v in options.items() if str(v).lower() in lower]
        if len(hits) == 1:
            return hits[0], "text"
    return (NO_ANSWER, "none") if judge is None else _judged(text, options, question, judge)


def _judged(text: str, options: Mapping[str, str], question: str, judge: Judge) -> tuple[str, str]:
    picked = judge(question, options, text)
    if isinstance(picked, str) and picked.strip().upper() in options:
        return picked.strip().upper(), "judge"
    return NO_ANSWER, "none"


def _legacy_choice(prediction: str, options: Mapping[str, str]) -> tuple[str, str]:
    return choose(prediction, options)


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            "unimedvl",
            "this project (the first-word yes/no rule, exact match otherwise)",
            T.closed_correct,
            T.exact_match,
            _legacy_choice,
        ),
        Protocol(
            "llava-med",
            "microsoft/LLaVA-Med llava/eval/run_eval_batch.py (evaluate)",
            _llava_hit,
            _llava_hit,
            _legacy_choice,
        ),
        Protocol(
            "multimedeval",
            "corentin-ryr/MultiMedEval multimedeval/task_families.py (VQA.evaluate)",
            lambda p, g: _mme_recall(p, g, closed=True) >= 0.4,
            lambda p, g: _mme_recall(p, g) >= 0.75,
            _legacy_choice,
        ),
        Protocol(
            "medevalkit",
            "alibaba-damo-academy/MedEvalKit utils/VQA_RAD/VQA_RAD.py (cal_metrics), utils/utils.py",
            _mek_closed,
            _mek_exact,
            _legacy_choice,
        ),
        Protocol(
            "vlmevalkit",
            "open-compass/VLMEvalKit vlmeval/utils/matching_util.py (can_infer_option, can_infer_text)",
            T.closed_correct,
            T.exact_match,
            lambda p, o: vlmevalkit_choice(p, o),
        ),
    )
}
NAMES = tuple(PROTOCOLS)


def get_protocol(name: str | None) -> Protocol:
    """The protocol called ``name`` (None: the default); ConfigError listing the names otherwise."""
    key = (name or DEFAULT_PROTOCOL).strip().lower()
    if key not in PROTOCOLS:
        raise ConfigError(f"--protocol {name!r} is not known; choose one of {', '.join(NAMES)}")
    return PROTOCOLS[key]


def is_yes_no(gold: str) -> bool:
    """The harnesses' closed test where a source has no answer_type: a yes/no gold answer (English or Chinese)."""
    return T.yes_no_word(gold) is not None and len(T.normalize_answer(gold).split()) <= 1


def correct(protocol: Protocol, kind: str, prediction: str, gold: str) -> bool:
    """Whether ``prediction`` counts as correct for a closed / open question under ``protocol``.

    MultiMedEval and MedEvalKit decide closed vs open by the gold answer (yes/no) rather than by a
    published answer_type; they are given that split here, so a closed "left" is scored as open.
    """
    if protocol.name in ("multimedeval", "medevalkit"):
        kind = "closed" if is_yes_no(gold) else "open"
    return protocol.closed(prediction, gold) if kind == "closed" else protocol.open(prediction, gold)


__all__ = [
    "DEFAULT_PROTOCOL",
    "NAMES",
    "PROTOCOLS",
    "Protocol",
    "correct",
    "get_protocol",
    "medevalkit_response",
    "vlmevalkit_choice",
]
