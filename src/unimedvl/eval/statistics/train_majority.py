"""The majority baseline's answers taken from a training split, so the baseline is one a model could be.

Without one, the majority answer is chosen on the test set's own gold answers and labelled as an upper
bound (:data:`unimedvl.eval.statistics.baselines.MAJORITY_UPPER_BOUND`) in every table. Where the train split comes from:

- a standard benchmark (``eval --benchmark NAME=PATH``): the reader's ``train`` split of the same folder,
  when it has one (VQA-RAD, SLAKE, PathVQA); not when the evaluated split is itself ``train``. Eval
  writes the table beside the converted JSONL (``<label>.train_majority.json``, ``null`` without one);
- a plain JSONL (``eval --data X.jsonl``): the sibling file whose name has ``train`` where ``X``'s has
  ``test`` / ``val`` / ``validation`` / ``eval`` (``test.jsonl`` -> ``train.jsonl``,
  ``vqa_test.jsonl`` -> ``vqa_train.jsonl``).

The answers are grouped as the baseline groups them: question type, then closed / open, classified by
the same scoring code as the test lines (:func:`unimedvl.eval.runner.batch.score_answer` and the benchmark
readers' answer types). The table ``{"source": path, "answers": {question_type: {kind: answer}}}``
goes to :func:`unimedvl.eval.statistics.baselines.question_baselines`; statistics.json records it under ``vqa``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from unimedvl.errors import UserError
from unimedvl.metrics.text import normalize_answer

_HELD_OUT = re.compile(r"(?<![a-z])(test|val|validation|eval)(?![a-z])", re.IGNORECASE)


def majority_table(triples: Iterable[tuple[str | None, str | None, str | None]]) -> dict[str, dict[str, str]]:
    """{question_type: {kind: most common normalised answer}} over (question_type, kind, gold) triples
    (closed and open only; ties: the first met)."""
    counts: dict[tuple[str, str], Counter] = {}
    for qtype, kind, gold in triples:
        if kind in ("closed", "open") and gold is not None and str(gold).strip():
            counts.setdefault((str(qtype or "all"), kind), Counter())[normalize_answer(str(gold))] += 1
    table: dict[str, dict[str, str]] = {}
    for (qtype, kind), counter in counts.items():
        table.setdefault(qtype, {})[kind] = counter.most_common(1)[0][0]
    return table


def sibling_train_file(data: Path) -> Path | None:
    """The plain-JSONL training file beside ``data`` (see the module docstring), if it exists."""
    stem = _HELD_OUT.sub(lambda m: "TRAIN" if m.group(0).isupper() else "train", data.stem)
    candidate = data.with_name(stem + data.suffix)
    return candidate if candidate != data and candidate.is_file() else None


def jsonl_train_majority(data: Path) -> dict[str, Any] | None:
    """The table from the sibling train JSONL of ``data``, or None without one (or without questions)."""
    from unimedvl.eval.runner.batch import load_samples, score_answer

    train = sibling_train_file(data)
    if train is None:
        return None
    triples = []
    for sample in load_samples(train, train.parent, confine_data_dir=None):  # answers only: images unchecked
        if sample.kind == "question" and sample.record is not None:
            scored = score_answer(sample.record, "")
            triples.append((scored.get("question_type"), scored.get("answer_kind"), scored.get("gold")))
    answers = majority_table(triples)
    return {"source": str(train), "answers": answers} if answers else None


def benchmark_train_majority(name: str, path: Path, evaluated_split: str | None, options) -> dict[str, Any] | None:
    """The table from the benchmark's ``train`` split (same folder), or None without one."""
    from unimedvl.benchmarks.convert import open_benchmark

    if evaluated_split is not None and evaluated_split.lower() in ("train", "all"):
        return None
    try:
        source = open_benchmark(name, path, "train", options)
    except UserError:
        return None
    if source.split is None:
        return None
    problems: list = []
    items = source.reader.items(source.path, source.layout, source.split, source.options, problems)
    answers = majority_table((item.category, item.answer_type, item.answer) for item in items)
    return {"source": f"{path} ({source.split} split)", "answers": answers} if answers else None


def sidecar_path(data: Path) -> Path:
    """Where eval keeps a converted benchmark's table: ``<label>.train_majority.json`` beside its JSONL."""
    return data.with_name(data.stem + ".train_majority.json")


def train_majority_for(data: Path) -> dict[str, Any] | None:
    """The table for the test JSONL ``data``: its benchmark's (sidecar file), else its sibling train JSONL's."""
    sidecar = sidecar_path(data)
    if sidecar.is_file():
        return json.loads(sidecar.read_text(encoding="utf-8"))
    return jsonl_train_majority(data)


__all__ = [
    "benchmark_train_majority",
    "jsonl_train_majority",
    "majority_table",
    "sibling_train_file",
    "sidecar_path",
    "train_majority_for",
]
