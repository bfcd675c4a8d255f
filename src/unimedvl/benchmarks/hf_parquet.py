"""Hugging Face parquet snapshots (``data/<split>-NNNNN-of-NNNNN-<hash>.parquet``) of VQA datasets.

Sources (fact sheet sections 1b and 3): the dataset cards of ``flaviagiammarino/vqa-rad`` (files
``data/train-00000-of-00001-eb8844602202be60.parquet`` and ``data/test-00000-of-00001-
e5bc3d208bb4deeb.parquet``; columns ``image``, ``question``, ``answer``; splits train 1,793 /
test 451) and ``flaviagiammarino/path-vqa`` (same columns; train / validation / test; shards with
a hash suffix, e.g. ``data/validation-00001-of-00003-cbfe947a3418595c.parquet``). The ``image``
column is the datasets library's Image feature: a struct ``{bytes, path}`` (path usually null).

A snapshot may hold several shards per split; only that split's are read, in shard order. The
same tables are read from the hub cache, the ``datasets`` Arrow cache and ``save_to_disk`` folders
(:mod:`unimedvl.benchmarks.hf_layouts`). Neither snapshot has an answer_type or a question id: a
question is closed when its answer is yes/no, and its id is its position in the split (0-based,
the datasets library's row index).

Tables are read with pyarrow, a batch at a time, so a large split never sits in memory whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from unimedvl.benchmarks import hf_layouts
from unimedvl.benchmarks.hf_layouts import split_of as shard_split
from unimedvl.benchmarks.hf_layouts import splits
from unimedvl.benchmarks.hf_layouts import table_files as shard_files
from unimedvl.benchmarks.items import BenchmarkItem, ImageSource, text_field, yes_no_rule
from unimedvl.data.records import Problem

COLUMNS = ("image", "question", "answer")
__all__ = ["COLUMNS", "read_split", "shard_files", "shard_split", "splits"]


def _image_source(cell: Any, shard: Path) -> ImageSource | None:
    """The Image feature cell (``{bytes, path}`` struct, or raw bytes) as an ImageSource."""
    if isinstance(cell, dict):
        data, path = cell.get("bytes"), cell.get("path")
        if data:
            return ImageSource(data=bytes(data))
        if isinstance(path, str) and path:  # a snapshot that stores paths only: relative to the shard
            return ImageSource(path=str(shard.parent / path))
        return None
    if isinstance(cell, (bytes, bytearray)) and cell:
        return ImageSource(data=bytes(cell))
    return None


def read_split(root: Path, benchmark: str, split: str | None, problems: list[Problem]) -> Iterator[BenchmarkItem]:
    """The questions of one split (None: every split), shard by shard, row by row."""
    counters: dict[str, int] = {}
    for shard in shard_files(root):
        shard_name = shard_split(shard)
        if split is not None and shard_name != split:
            continue
        try:
            names = hf_layouts.columns(shard)
        except ValueError as err:
            problems.append(Problem(str(shard), None, f"not a readable parquet / Arrow file ({err})"))
            continue
        missing = [c for c in COLUMNS if c not in names]
        if missing:
            problems.append(
                Problem(
                    str(shard),
                    None,
                    f"no column(s) {', '.join(missing)} (columns: "
                    f"{', '.join(names)}); expected a {benchmark} snapshot with {', '.join(COLUMNS)}",
                )
            )
            continue
        for row, record in enumerate(hf_layouts.rows(shard, list(COLUMNS)), start=1):
            index = counters.get(shard_name, 0)
            counters[shard_name] = index + 1
            item = _item(record, benchmark, shard_name, index, shard, row, problems)
            if item is not None:
                yield item


def _item(
    record: dict, benchmark: str, split: str, index: int, shard: Path, row: int, problems: list[Problem]
) -> BenchmarkItem | None:
    question, answer = text_field(record.get("question")), text_field(record.get("answer"))
    image = _image_source(record.get("image"), shard)
    why = (
        "no question text"
        if question is None
        else "no answer"
        if answer is None
        else ("no image bytes in the image cell" if image is None else None)
    )
    if why:
        problems.append(Problem(str(shard), row, why))
        return None
    return BenchmarkItem(
        benchmark=benchmark,
        split=split,
        question_id=str(index),
        question=question,
        answer=answer,
        answer_type=yes_no_rule(answer),
        images=(image,),
        source=f"{shard}:{row}",
    )
