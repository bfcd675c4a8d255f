"""Scoring of standard-benchmark questions by the published protocols, and their statistics block.

Per question (:func:`score_question`, called by :func:`unimedvl.eval.runner.batch.score_answer` for
records that :mod:`unimedvl.benchmarks.convert` wrote):

closed
    accuracy after normalisation (:func:`unimedvl.metrics.text.closed_correct`: lowercase,
    punctuation and articles dropped, number words as digits; a yes/no gold answer is matched by
    the prediction's first word, yes/no synonyms such as "yeah" / "false" included; any other
    closed answer - "left", "CT" - by normalised equality).
open
    token recall, the LLaVA-Med protocol (the share of the gold answer's distinct tokens found in
    the prediction after the same normalisation), and exact match (normalised equality), which is
    what counts as *correct* for an open question in the pooled accuracy.
multiple choice
    VLMEvalKit's exact-matching extraction (:mod:`unimedvl.metrics.choice_matching`): option letter,
    then option text, else Z (wrong); an optional judge is consulted where VLMEvalKit would call
    its LLM judge (:func:`benchmark_statistics` ``judge=``).

Per run (:func:`benchmark_statistics`, the ``benchmark`` block of statistics.json): overall
accuracy (every scored question, closed + open exact match + multiple choice, pooled), closed
accuracy, open recall and exact match, multiple-choice accuracy, and the same per category,
modality and the reader's breakdowns, each as ``{value, ci95: [low, high], n}`` with a 95%
percentile-bootstrap interval (:mod:`unimedvl.metrics.uncertainty`), plus the prompt template used.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from unimedvl.benchmarks.prompts import TEMPLATES
from unimedvl.benchmarks.protocols import DEFAULT_PROTOCOL, PROTOCOLS, get_protocol, vlmevalkit_choice
from unimedvl.benchmarks.protocols import correct as vqa_correct
from unimedvl.data.records import Record
from unimedvl.metrics import text as T
from unimedvl.metrics.choice_matching import Judge, choose
from unimedvl.metrics.uncertainty import DEFAULT_RESAMPLES, clustered_mean_estimate
from unimedvl.metrics.uncertainty import mean_estimate as estimate

# The benchmark keys of a record that travel on its result line (the statistics read them there).
LINE_FIELDS = (
    "benchmark",
    "split",
    "question_id",
    "question",
    "answer_type",
    "options",
    "groups",
    "prompt_template",
    "paper_column",
    "source_md5",
    "image_key",
)
PROTOCOL = {
    "closed": "accuracy after normalisation (case, punctuation, articles, number words; yes/no by the first word, "
    "with synonyms)",
    "open": "token recall (LLaVA-Med: share of the gold tokens found in the prediction) and exact match after "
    "normalisation; exact match counts as correct in the pooled accuracy",
    "multiple_choice": "VLMEvalKit exact matching: option letter, then option text, else wrong (no LLM judge "
    "unless one is given)",
    "overall": "accuracy pooled over every scored question (closed correct, open exact match, choice correct) under "
    "the run's protocol (default unimedvl, the rules above); accuracy_by_protocol gives every protocol's",
    "ci95": "95% percentile bootstrap over questions (2000 resamples, seed 0); Wilson's score interval for an "
    "accuracy of 0% or 100%; accuracy_clustered_by_image resamples images (their questions together)",
}


def is_benchmark_record(record: Record) -> bool:
    """True for the records :mod:`unimedvl.benchmarks.convert` writes."""
    return isinstance(record.extra.get("benchmark"), str) and isinstance(record.extra.get("answer_type"), str)


def line_fields(record: Record) -> dict[str, Any]:
    """The benchmark fields a result line carries (``line["benchmark"]``)."""
    return {k: record.extra.get(k) for k in LINE_FIELDS}


def score_question(record: Record, prediction: str, gold: str | None, judge: Judge | None = None) -> dict[str, Any]:
    """The per-question metrics of a benchmark record (see the module docstring)."""
    return score_fields(record.extra, prediction, gold, judge)


def score_fields(
    fields: Mapping[str, Any], prediction: str, gold: str | None, judge: Judge | None = None
) -> dict[str, Any]:
    """:func:`score_question` on a record's benchmark fields (answer_type, options, question, protocol):
    ``correct`` under the record's protocol (default ``unimedvl``), and ``by_protocol`` under each."""
    kind = fields["answer_type"]
    if gold is None:  # a TEST split without published answers: answered, not scored
        return {"scored": False}
    chosen = get_protocol(fields.get("protocol"))
    if kind == "multiple_choice":
        options = fields.get("options") or {}
        question = str(fields.get("question") or "")
        if chosen.name == "vlmevalkit":
            letter, how = vlmevalkit_choice(prediction, options, question, judge)
        else:
            letter, how = choose(prediction, options, question, judge)
        by = {name: p.choice(prediction, options)[0] == gold for name, p in PROTOCOLS.items()}
        return {
            "answer_kind": kind,
            "correct": letter == gold,
            "choice": letter,
            "matched_by": how,
            "protocol": chosen.name,
            "by_protocol": by,
        }
    by = {name: vqa_correct(p, kind, prediction, gold) for name, p in PROTOCOLS.items()}
    out = {"answer_kind": kind, "correct": by[chosen.name], "protocol": chosen.name, "by_protocol": by}
    if kind == "closed":
        return out
    return {**out, "exact_match": T.exact_match(prediction, gold), "recall": T.open_recall(prediction, gold)}


# ---------------------------------------------------------------------------------------------
# Statistics.


def _scores(lines: Sequence[Mapping[str, Any]], n_resamples: int) -> dict[str, Any]:
    """accuracy (pooled) and the per-kind metrics of a set of scored lines."""

    def of(kind: str, key: str = "correct") -> list[float]:
        return [float(l["metrics"][key]) for l in lines if l["metrics"]["answer_kind"] == kind]

    out: dict[str, Any] = {"accuracy": estimate([float(l["metrics"]["correct"]) for l in lines], n_resamples)}
    extra = {
        "closed_accuracy": of("closed"),
        "open_recall": of("open", "recall"),
        "open_exact_match": of("open", "exact_match"),
        "multiple_choice_accuracy": of("multiple_choice"),
    }
    out.update({k: estimate(v, n_resamples) for k, v in extra.items() if v})
    return out


def _by_protocol(lines: Sequence[Mapping[str, Any]], n_resamples: int) -> dict[str, Any]:
    """Pooled accuracy under each protocol (lines scored before protocols were recorded are left out)."""
    out = {}
    for name in PROTOCOLS:
        values = [
            float(l["metrics"]["by_protocol"][name]) for l in lines if name in (l["metrics"].get("by_protocol") or {})
        ]
        if values and len(values) == len(lines):
            out[name] = estimate(values, n_resamples)
    return out


def _clustered(lines: Sequence[Mapping[str, Any]], n_resamples: int) -> dict[str, Any] | None:
    """The pooled accuracy with a bootstrap over images (the questions of one image resampled together)."""
    keys = [l["benchmark"].get("image_key") for l in lines]
    if not lines or None in keys:
        return None
    return clustered_mean_estimate([float(l["metrics"]["correct"]) for l in lines], keys, n_resamples)


def _rejudge(line: Mapping[str, Any], judge: Judge) -> Mapping[str, Any]:
    """A multiple-choice line the rules could not read, scored again with the judge."""
    bench, metrics = line["benchmark"], line["metrics"]
    if metrics.get("answer_kind") != "multiple_choice" or metrics.get("matched_by") != "none":
        return line
    letter, how = choose(
        str(line.get("answer") or ""), bench.get("options") or {}, str(bench.get("question") or ""), judge
    )
    return {**line, "metrics": {**metrics, "choice": letter, "matched_by": how, "correct": letter == line.get("gold")}}


def benchmark_statistics(
    lines: Sequence[Mapping[str, Any]], judge: Judge | None = None, n_resamples: int = DEFAULT_RESAMPLES
) -> dict[str, Any] | None:
    """The ``benchmark`` block of statistics.json (None when no line is a benchmark question).

    ``judge(question, options, prediction) -> letter | None`` rescores the multiple-choice answers
    the matching rules could not read (VLMEvalKit's LLM-judge step; by default they count wrong).
    """
    bench = [l for l in lines if isinstance(l.get("benchmark"), dict)]
    if not bench:
        return None
    info = bench[0]["benchmark"]
    ok = [l for l in bench if not l.get("error")]
    scored = [l for l in ok if "correct" in (l.get("metrics") or {})]
    if judge is not None:
        scored = [_rejudge(l, judge) for l in scored]
    template = TEMPLATES.get(str(info.get("prompt_template")))
    out: dict[str, Any] = {
        "name": info.get("benchmark"),
        "split": info.get("split"),
        "paper_column": info.get("paper_column"),
        "source_md5": info.get("source_md5"),
        "prompt_template": {"name": info.get("prompt_template"), "text": template.text if template else None},
        "protocol": PROTOCOL,
        "n_questions": len(lines),
        "n_scored": len(scored),
        "n_unscored": len(ok) - len(scored),
        "n_failed": sum(1 for l in lines if l.get("error")),
        "judge": getattr(judge, "__name__", type(judge).__name__) if judge is not None else None,
        "overall": _scores(scored, n_resamples) if scored else {},
        "scoring_protocol": next((l["metrics"].get("protocol") for l in scored), DEFAULT_PROTOCOL),
        "accuracy_by_protocol": _by_protocol(scored, n_resamples),
        "accuracy_clustered_by_image": _clustered(scored, n_resamples),
    }
    matched = Counter(
        l["metrics"].get("matched_by") for l in scored if l["metrics"]["answer_kind"] == "multiple_choice"
    )
    if matched:
        out["multiple_choice_matched_by"] = dict(sorted(matched.items()))
    by_group: dict[str, dict[str, Any]] = {}
    for name in sorted({k for l in scored for k in (l["benchmark"].get("groups") or {})}):
        values = sorted(
            {str(l["benchmark"]["groups"][name]) for l in scored if name in (l["benchmark"].get("groups") or {})}
        )
        by_group[name] = {
            v: _scores([l for l in scored if str((l["benchmark"].get("groups") or {}).get(name)) == v], n_resamples)
            for v in values
        }
    out["by_group"] = by_group
    return out


__all__ = ["PROTOCOL", "benchmark_statistics", "estimate", "is_benchmark_record", "line_fields", "score_question"]
