"""PathVQA: the Hugging Face parquet snapshot ``flaviagiammarino/path-vqa``.

Fact sheet section 3 (the dataset card): columns ``image``, ``question``, ``answer``; splits
train 19,654 / validation 6,259 / test 6,719; shards with a hash suffix (the train shard count is
unconfirmed, any number is read). No answer_type: closed = yes/no answers (MultiMedEval,
MedEvalKit). Reading: :mod:`unimedvl.benchmarks.hf_parquet`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from unimedvl.benchmarks import hf_parquet
from unimedvl.benchmarks.items import BenchmarkItem
from unimedvl.benchmarks.reader import Reader, ReadOptions
from unimedvl.data.records import Problem


class PathVqa(Reader):
    """PathVQA, parquet snapshot."""

    name = "path-vqa"
    expects = "the Hugging Face snapshot (data/<split>-NNNNN-of-NNNNN-<hash>.parquet; splits train, validation, test)"
    split_aliases: ClassVar[dict[str, str]] = {"val": "validation", "validate": "validation", "valid": "validation"}
    paper_column = "PathVQA"

    def layout(self, path: Path) -> str | None:
        return "parquet" if hf_parquet.shard_files(path) else None

    def splits(self, path: Path, layout: str) -> list[str]:
        return hf_parquet.splits(path)

    def items(self, path: Path, layout: str, split: str | None, options: ReadOptions,
              problems: list[Problem]) -> Iterator[BenchmarkItem]:  # fmt: skip
        yield from hf_parquet.read_split(path, self.name, split, problems)
