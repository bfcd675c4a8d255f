"""SLAKE (Slake1.0): ``train.json`` / ``validate.json`` / ``test.json`` and the image folder ``imgs/``.

Fact sheet section 2 (the release README as reproduced by openmedlab-style repos; lmms-eval's
``slake`` task; MultiMedEval): the release unzips to ``Slake1.0/`` with ``imgs/xmlabN/source.jpg``
(plus masks, detections), ``KG/``, ``mask.txt`` and the three split files. The Hugging Face mirror
``BoKelvin/SLAKE`` renamed ``validate.json`` to ``validation.json`` in a later commit and ships the
images as ``imgs.zip``, which is read in place (its entries ``imgs/xmlabN/source.jpg``, or without
the ``imgs/`` prefix; the images a question set uses are extracted on conversion). Each split file is a JSON list of records
with ``img_id``, ``img_name`` (relative to ``imgs/``), ``question``, ``answer``, ``q_lang``
(en / zh), ``location``, ``modality``, ``answer_type`` (OPEN / CLOSED), ``base_type``,
``content_type`` (Modality, Organ, Position, ...), ``triple`` and ``qid``.

As papers report (LLaVA-Med, MultiMedEval, lmms-eval ``slake_en``), only English questions are
read by default (``--language en``; ``zh`` or ``all`` otherwise; MedEvalKit scores both). The
English test split is usually given as 1,061 questions (unconfirmed). Closed vs open comes from
``answer_type`` (some CLOSED answers are not yes/no, e.g. left / right); ``content_type`` is the
category and ``modality`` the modality; answers keep their published case.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from unimedvl.benchmarks.items import BenchmarkItem, ImageSource, answer_type_of, text_field
from unimedvl.benchmarks.reader import Reader, ReadOptions, question_rows
from unimedvl.data.records import Problem


class ZipImages:
    """The images of ``imgs.zip``, read in place: ``source(img_name)`` gives an ImageSource of its bytes."""

    def __init__(self, path: Path, archive: zipfile.ZipFile):
        self.path, self.archive = path, archive
        self.names = set(archive.namelist())

    @classmethod
    def open(cls, path: Path, problems: list[Problem]) -> ZipImages | None:
        try:
            return cls(path, zipfile.ZipFile(path))
        except (OSError, zipfile.BadZipFile) as err:
            problems.append(Problem(str(path), None, f"cannot read the image archive ({err}); unzip it to imgs/"))
            return None

    def source(self, name: str) -> ImageSource:
        """The bytes of ``imgs/<name>`` (or ``<name>``); a path that fails the image check when absent."""
        for entry in (f"imgs/{name}", name):
            if entry in self.names:
                return ImageSource(data=self.archive.read(entry))
        return ImageSource(path=f"{self.path}!imgs/{name}")


SPLIT_FILES = {"train": ("train.json",), "validate": ("validate.json", "validation.json"), "test": ("test.json",)}
_REQUIRED = ("img_name", "question", "answer", "q_lang")


def _language(record: dict) -> str:
    return str(record["q_lang"]).strip().lower()


class Slake(Reader):
    """SLAKE 1.0 release (or the BoKelvin/SLAKE mirror, imgs.zip read in place)."""

    name = "slake"
    expects = "Slake1.0/ with test.json, validate.json (or validation.json), train.json and imgs/"
    split_aliases: ClassVar[dict[str, str]] = {"val": "validate", "valid": "validate", "validation": "validate"}
    paper_column = "SLAKE"

    @staticmethod
    def root(path: Path) -> Path:
        """The folder holding the split files (``path`` or its ``Slake1.0/``)."""
        return path / "Slake1.0" if (path / "Slake1.0").is_dir() else path

    def layout(self, path: Path) -> str | None:
        root = self.root(path)
        has_split = any((root / name).is_file() for names in SPLIT_FILES.values() for name in names)
        return "release" if has_split and ((root / "imgs").is_dir() or (root / "imgs.zip").is_file()) else None

    def splits(self, path: Path, layout: str) -> list[str]:
        root = self.root(path)
        return [s for s, names in SPLIT_FILES.items() if any((root / n).is_file() for n in names)]

    def label(self, path: Path, split: str | None, options: ReadOptions) -> str:
        base = super().label(path, split, options)
        return base if options.language == "en" else f"{base}-{options.language}"

    def items(
        self, path: Path, layout: str, split: str | None, options: ReadOptions, problems: list[Problem]
    ) -> Iterator[BenchmarkItem]:
        root = self.root(path)
        images = root / "imgs"
        archive = None if images.is_dir() else ZipImages.open(root / "imgs.zip", problems)
        if not images.is_dir() and archive is None:
            return

        def wanted(record) -> bool:
            return options.language == "all" or _language(record) == options.language

        for name in [split] if split is not None else list(SPLIT_FILES):
            files = [root / n for n in SPLIT_FILES.get(name, (f"{name}.json",)) if (root / n).is_file()]
            if not files:
                continue
            json_path = files[0]
            texts = ("question", "answer", "img_name")
            for row, record, (question, answer, image) in question_rows(
                json_path, problems, _REQUIRED, "SLAKE", texts, wanted
            ):
                qid = record.get("qid", row - 1)
                yield BenchmarkItem(
                    benchmark=self.name,
                    split=name,
                    question_id=str(qid),
                    question=question,
                    answer=answer,
                    answer_type=answer_type_of(record.get("answer_type"), answer),
                    images=(archive.source(image) if archive else ImageSource(path=str(images / image)),),
                    source=f"{json_path}:{row}",
                    category=text_field(record.get("content_type")),
                    modality=text_field(record.get("modality")),
                    fields={
                        "language": _language(record),
                        "location": text_field(record.get("location")),
                        "base_type": text_field(record.get("base_type")),
                        "img_id": record.get("img_id"),
                    },
                )
