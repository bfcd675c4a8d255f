"""Hugging Face parquet snapshots (``data/<split>-NNNNN-of-NNNNN-<hash>.parquet``) of VQA datasets.

Sources (fact sheet sections 1b and 3): the dataset cards of ``flaviagiammarino/vqa-rad`` (files
``data/train-00000-of-00001-eb8844602202be60.parquet`` and ``data/test-00000-of-00001-
e5bc3d208bb4deeb.parquet``; columns ``image``, ``question``, ``answer``; splits train 1,793 /
test 451) and ``flaviagiammarino/path-vqa`` (same columns; train / validation / test; shards with
a hash suffix, e.g. ``data/validation-00001-of-00003-cbfe947a3418595c.parquet``). The ``image``
column is the datasets library's Image feature: a struct ``{bytes, path}`` (path usually null).

A snapshot may hold several shards per split; only that split's are read, in shard order. Also
accepted: ``<split>.parquet`` files and the ``refs/convert/parquet`` branch layout
(``<config>/<split>/NNNN.parquet``). Neither snapshot has an answer_type or a question id: a
question is closed when its answer is yes/no, and its id is its position in the split (0-based,
the datasets library's row index).

Parquet is read with pyarrow, a batch at a time, so a large split never sits in memory whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from unimedvl.benchmarks.items import BenchmarkItem, ImageSource, text_field, yes_no_rule
from unimedvl.data.records import Problem
from unimedvl.errors import UserError

COLUMNS = ("image", "question", "answer")
_SHARD = re.compile(r"^(?P<split>[A-Za-z0-9_.]+?)-\d{5}-of-\d{5}(?:-[0-9a-f]+)?\.parquet$")
_BATCH_ROWS = 64  # rows decoded at a time: a few MB of image bytes


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError("reading a parquet snapshot needs pyarrow: pip install pyarrow") from None
    return pq


def shard_files(root: Path) -> list[Path]:
    """Every parquet file of a snapshot folder: top level, ``data/``, ``<config>/<split>/``."""
    if root.is_file():
        return [root] if root.suffix == ".parquet" else []
    found = set()
    for pattern in ("*.parquet", "data/*.parquet", "data/*/*.parquet", "*/*/*.parquet"):
        found.update(p for p in root.glob(pattern) if p.is_file())
    return sorted(found)


def shard_split(path: Path) -> str:
    """The split a shard belongs to: its name's prefix, else ``<split>.parquet``, else its folder."""
    match = _SHARD.match(path.name)
    if match:
        return match.group("split")
    if re.fullmatch(r"\d+", path.stem):  # refs/convert/parquet: <config>/<split>/0000.parquet
        return path.parent.name
    return path.stem


def splits(root: Path) -> list[str]:
    """The splits present, in name order."""
    return sorted({shard_split(p) for p in shard_files(root)})


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


def read_split(root: Path, benchmark: str, split: str | None,
               problems: list[Problem]) -> Iterator[BenchmarkItem]:  # fmt: skip
    """The questions of one split (None: every split), shard by shard, row by row."""
    pq = _pyarrow_parquet()
    counters: dict[str, int] = {}
    for shard in shard_files(root):
        shard_name = shard_split(shard)
        if split is not None and shard_name != split:
            continue
        try:
            handle = pq.ParquetFile(shard)
        except Exception as err:  # noqa: BLE001 - pyarrow raises its own error types for broken files
            problems.append(Problem(str(shard), None, f"not a readable parquet file ({type(err).__name__}: {err})"))
            continue
        names = handle.schema_arrow.names
        missing = [c for c in COLUMNS if c not in names]
        if missing:
            problems.append(Problem(str(shard), None, f"no column(s) {', '.join(missing)} (columns: "
                                    f"{', '.join(names)}); expected a {benchmark} snapshot with {', '.join(COLUMNS)}"))  # fmt: skip
            continue
        row = 0
        for batch in handle.iter_batches(batch_size=_BATCH_ROWS, columns=list(COLUMNS)):
            for record in batch.to_pylist():
                row += 1
                index = counters.get(shard_name, 0)
                counters[shard_name] = index + 1
                item = _item(record, benchmark, shard_name, index, shard, row, problems)
                if item is not None:
                    yield item


def _item(record: dict, benchmark: str, split: str, index: int, shard: Path, row: int,
          problems: list[Problem]) -> BenchmarkItem | None:  # fmt: skip
    question, answer = text_field(record.get("question")), text_field(record.get("answer"))
    image = _image_source(record.get("image"), shard)
    why = "no question text" if question is None else "no answer" if answer is None else (
        "no image bytes in the image cell" if image is None else None)  # fmt: skip
    if why:
        problems.append(Problem(str(shard), row, why))
        return None
    return BenchmarkItem(benchmark=benchmark, split=split, question_id=str(index), question=question, answer=answer,
                         answer_type=yes_no_rule(answer), images=(image,), source=f"{shard}:{row}")  # fmt: skip
