"""PathVQA: the Hugging Face copy ``flaviagiammarino/path-vqa``, or the original ``pvqa/`` release.

Fact sheet section 3 (the dataset card): columns ``image``, ``question``, ``answer``; splits
train 19,654 / validation 6,259 / test 6,719; shards with a hash suffix (the train shard count is
unconfirmed, any number is read). No answer_type: closed = yes/no answers (MultiMedEval,
MedEvalKit). Reading: :mod:`unimedvl.benchmarks.hf_parquet` (also the hub and Arrow caches and
save_to_disk folders). The original release (``pvqa/qas/*_qa.pkl`` + ``pvqa/images/``; test 6,761
questions, not de-duplicated or lower-cased): :mod:`unimedvl.benchmarks.pvqa_release`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from unimedvl.benchmarks import hf_parquet, pvqa_release
from unimedvl.benchmarks.items import BenchmarkItem, ImageSource, text_field, yes_no_rule
from unimedvl.benchmarks.reader import Reader, ReadOptions
from unimedvl.data.records import Problem
from unimedvl.errors import DataError


class PathVqa(Reader):
    """PathVQA, parquet snapshot."""

    name = "path-vqa"
    expects = (
        "the Hugging Face copy (data/<split>-NNNNN-of-NNNNN-<hash>.parquet, its Arrow cache or a save_to_disk "
        "folder; splits train, validation, test) or the original pvqa/ (qas/<split>_qa.pkl, images/)"
    )
    split_aliases: ClassVar[dict[str, str]] = {"val": "validation", "validate": "validation", "valid": "validation"}
    paper_column = "PathVQA"

    def layout(self, path: Path) -> str | None:
        if pvqa_release.release_root(path) is not None:
            return "release"
        return "parquet" if hf_parquet.shard_files(path) else None

    def splits(self, path: Path, layout: str) -> list[str]:
        if layout == "release":
            return sorted(pvqa_release.question_files(pvqa_release.release_root(path)))
        return hf_parquet.splits(path)

    def resolve_split(self, path: Path, layout: str, split: str) -> str:
        """The split a user typed as this layout names it (the release says ``val``, the HF copy ``validation``)."""
        present = self.splits(path, layout)
        if split in present:
            return split
        alias = self.split_name(split) or split
        return next((s for s in present if s in (alias, "val" if alias == "validation" else alias)), alias)

    def items(
        self, path: Path, layout: str, split: str | None, options: ReadOptions, problems: list[Problem]
    ) -> Iterator[BenchmarkItem]:
        if layout == "parquet":
            yield from hf_parquet.read_split(path, self.name, split, problems)
            return
        root = pvqa_release.release_root(path)
        for name, file in sorted(pvqa_release.question_files(root).items()):
            if split is not None and name != split:
                continue
            try:
                records = pvqa_release.load_plain_pickle(file)
            except DataError as err:
                problems.append(Problem(str(file), None, str(err).split(": ", 1)[-1]))
                continue
            if not isinstance(records, list):
                problems.append(
                    Problem(str(file), None, f"expected a list of question dicts, got {type(records).__name__}")
                )
                continue
            for row, record in enumerate(records, start=1):
                texts = [
                    text_field(record.get(k)) if isinstance(record, dict) else None
                    for k in ("image", "question", "answer")
                ]
                if None in texts:
                    problems.append(Problem(str(file), row, "needs image, question and answer"))
                    continue
                image, question, answer = texts
                yield BenchmarkItem(
                    benchmark=self.name,
                    split=name,
                    question_id=str(row - 1),
                    question=question,
                    answer=answer,
                    answer_type=yes_no_rule(answer),
                    images=(ImageSource(path=str(pvqa_release.image_path(root, name, image))),),
                    source=f"{file}:{row}",
                    fields={"image_name": image},
                )
