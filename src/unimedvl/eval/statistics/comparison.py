"""Checkpoints compared on the same test items: paired bootstrap differences from their results.jsonl.

For each split with two runs or more, every run after the first is compared with the first (the
earliest checkpoint when the runs have training steps): per group (overall, task, question type)
and metric, the difference of the means on the sample ids both runs scored, with a 95% interval
that resamples items in pairs (:meth:`unimedvl.eval.statistics.item_scores.Scores.minus`). Pairing matters:
two checkpoints err on the same hard items, so their difference is far better determined than the
two unpaired intervals suggest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from unimedvl.eval.statistics.estimates import group_ids
from unimedvl.eval.statistics.item_scores import model_scores
from unimedvl.eval.statistics.stats_csv import StatsEntry
from unimedvl.fileio import read_json_lines
from unimedvl.metrics.uncertainty import DEFAULT_RESAMPLES

_GROUP_KINDS = {"by_task_type": "task", "by_question_type": "question type"}


def _lines(entry: StatsEntry) -> list[dict]:
    return read_json_lines(entry.path.parent / "results.jsonl", require="sample_id")[0]


def compare_split(
    runs: Sequence[StatsEntry], labels: Sequence[str], n_resamples: int = DEFAULT_RESAMPLES
) -> dict[str, Any] | None:
    """``{reference, others, rows: [{group, metric, differences: {label: {value, ci95, n}}}]}`` for one split
    (None with fewer than two runs that have results.jsonl)."""
    loaded = [(label, _lines(e)) for e, label in zip(runs, labels)]
    loaded = [(label, lines) for label, lines in loaded if lines]
    if len(loaded) < 2:
        return None
    (ref_label, ref_lines), others = loaded[0], loaded[1:]
    ref_scores = model_scores(ref_lines)
    groups: list[tuple[tuple[str, str], set[str] | None]] = [(("overall", ""), None)]
    for block, by_name in group_ids(ref_lines).items():
        groups += [((_GROUP_KINDS[block], name), ids) for name, ids in by_name.items()]
    other_scores = {label: model_scores(lines) for label, lines in others}
    rows = []
    for group, ids in groups:
        for metric, ref in ref_scores.items():
            ref_group = ref.subset(ids)
            diffs = {}
            for label, scores in other_scores.items():
                if metric in scores and ref_group.items:
                    diff = scores[metric].subset(ids).minus(ref_group, n_resamples)
                    if diff is not None:
                        diffs[label] = diff
            if diffs:
                rows.append({"group": list(group), "metric": metric, "differences": diffs})
    return {"reference": ref_label, "others": [label for label, _ in others], "rows": rows}


__all__ = ["compare_split"]
