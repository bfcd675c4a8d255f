"""Which option a free-text answer picks, by VLMEvalKit's exact-matching rules (no LLM judge).

The rules (VLMEvalKit ``vlmeval/utils/matching_util.py`` ``can_infer_option`` / ``can_infer_text``
and ``extract_answer_from_item``, as the fact sheet section 5c describes them; written anew here):

1. **Letter**: replace each of ``. ( ) [ ] , : ; ! * # { }`` by a space and split on
   whitespace. If exactly one option letter occurs as a whole token (case-sensitive: "A", not
   "a") that letter is the answer. If none does, a lone ``Z`` token means "no answer" (Z). A
   refusal phrase ("Cannot determine the answer", ...) gives Z.
2. **Text**: otherwise, lowercase; the letter whose option text occurs in the answer as a
   substring, when exactly one does.
3. Else no answer can be inferred: ``Z`` (wrong), unless a judge is given (:data:`Judge`), which
   is asked instead - the place where VLMEvalKit would call its LLM judge.

VLMEvalKit's default (non-verbose) path is followed: an "A" used as an article ("A mass in the
left lung") counts as the letter A. A newer revision that also requires the letter to occur
before the last 5 tokens is not followed (whether it is upstream is unconfirmed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

NO_ANSWER = "Z"
_SEPARATORS = ".()[],:;!*#{}"
REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)

# judge(question, options, prediction) -> the option letter it reads in the prediction, or None.
Judge = Callable[[str, Mapping[str, str], str], str | None]


def infer_letter(prediction: str, options: Mapping[str, str]) -> str | None:
    """Rule 1: the single option letter standing as a token, Z for a refusal or a lone Z, else None."""
    if any(phrase in prediction for phrase in REFUSALS):
        return NO_ANSWER
    text = prediction
    for ch in _SEPARATORS:
        text = text.replace(ch, " ")
    tokens = set(text.split())
    found = [letter for letter in options if letter in tokens]
    if len(found) == 1:
        return found[0]
    if not found and NO_ANSWER in tokens:
        return NO_ANSWER
    return None


def infer_text(prediction: str, options: Mapping[str, str]) -> str | None:
    """Rule 2: the single letter whose option text (lowercased) occurs in the lowercased prediction."""
    lower = prediction.lower()
    found = [letter for letter, text in options.items() if str(text).lower() in lower]
    return found[0] if len(found) == 1 else None


def match_choice(prediction: str, options: Mapping[str, str]) -> str | None:
    """Rules 1 then 2 on the stripped prediction: a letter, Z, or None when nothing can be inferred."""
    prediction = prediction.strip()
    return infer_letter(prediction, options) or infer_text(prediction, options)


def choose(
    prediction: str, options: Mapping[str, str], question: str = "", judge: Judge | None = None
) -> tuple[str, str]:
    """(letter, how): how is ``letter`` / ``text`` (rules), ``judge``, or ``none`` (Z: counted wrong)."""
    prediction = prediction.strip()
    letter = infer_letter(prediction, options)
    if letter is not None:
        return letter, "letter"
    letter = infer_text(prediction, options)
    if letter is not None:
        return letter, "text"
    if judge is not None:
        picked = judge(question, options, prediction)
        if isinstance(picked, str) and picked.strip().upper() in options:
            return picked.strip().upper(), "judge"
    return NO_ANSWER, "none"


__all__ = ["NO_ANSWER", "REFUSALS", "Judge", "choose", "infer_letter", "infer_text", "match_choice"]
