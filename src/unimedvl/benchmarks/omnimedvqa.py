"""OmniMedVQA: ``QA_information/<access>/*.json`` and ``Images/`` (multiple choice, options A-D).

Fact sheet section 4 (the release ``OmniMedVQA.zip`` of ``foreverbeliever/OmniMedVQA`` as read by
MedEvalKit's loader and the paper's Multi-Modality-Arena scorer): ``OmniMedVQA/QA_information/
Open-access/*.json`` and ``.../Restricted-access/*.json`` (one JSON list per source dataset, e.g.
``ACRIMA.json``), images under ``OmniMedVQA/Images/<dataset>/...``. Record fields: ``dataset``,
``question_id``, ``question_type`` (Disease Diagnosis, Anatomy Identification, Modality
Recognition, Other Biological Attributes, Lesion Grading), ``question``, ``gt_answer``,
``image_path`` (relative to the folder holding QA_information/ and Images/), ``option_A``,
``option_B``, optional ``option_C`` / ``option_D``, ``modality_type`` (one record of
``Chest CT Scan.json`` spells it ``modality``; both are read).

``gt_answer`` is the correct option's *text* (the official scorer compares option strings; some
re-packagings store the letter, so both are resolved). The release has no splits: the split is
the access folder - ``open-access`` (default: restricted-access images are usually not
distributed, and evaluators score Open-access; which subset the UniMedVL paper used is
unconfirmed; restricted-access when it is the only folder present), ``restricted-access``, or ``all``
(the access folders present; ``validate-data`` says which). Restricted-access ``image_path`` names
point into the original datasets: an image not under the release folder is looked up under
``--data-dir``. Files may also be JSON Lines (unconfirmed report), which is accepted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from unimedvl.benchmarks.items import MULTIPLE_CHOICE, BenchmarkItem, ImageSource, letter_of, text_field
from unimedvl.benchmarks.prompts import MULTIPLE_CHOICE as MC_PROMPT
from unimedvl.benchmarks.reader import Reader, ReadOptions, question_rows
from unimedvl.data.records import Problem

ACCESS = {"open-access": "Open-access", "restricted-access": "Restricted-access"}
_REQUIRED = ("question", "gt_answer", "image_path", "option_A", "option_B")


class OmniMedVqa(Reader):
    """OmniMedVQA release folder."""

    name = "omnimedvqa"
    expects = "OmniMedVQA/ with QA_information/Open-access/*.json (and Restricted-access/) and Images/"
    default_split = "open-access"
    split_aliases: ClassVar[dict[str, str]] = {
        "test": "open-access",
        "open": "open-access",
        "restricted": "restricted-access",
    }
    prompt = MC_PROMPT
    paper_column = "OmniMedVQA"
    breakdowns = ("dataset",)

    @staticmethod
    def root(path: Path) -> Path:
        """The folder holding QA_information/ (``path`` or its ``OmniMedVQA/``)."""
        return path / "OmniMedVQA" if (path / "OmniMedVQA" / "QA_information").is_dir() else path

    def layout(self, path: Path) -> str | None:
        return "release" if (self.root(path) / "QA_information").is_dir() else None

    def splits(self, path: Path, layout: str) -> list[str]:
        qa = self.root(path) / "QA_information"
        return [s for s, folder in ACCESS.items() if (qa / folder).is_dir()]

    def items(
        self, path: Path, layout: str, split: str | None, options: ReadOptions, problems: list[Problem]
    ) -> Iterator[BenchmarkItem]:
        root = self.root(path)
        wanted = self.splits(path, layout) if split is None else [split]  # all: the access folders present
        for access in wanted:
            folder = root / "QA_information" / ACCESS.get(access, access)
            if not folder.is_dir():
                problems.append(Problem(str(folder), None, f"no such folder; splits here: {self.splits(path, layout)}"))
                continue
            for json_path in sorted(folder.glob("*.json")):
                rows = question_rows(
                    json_path, problems, _REQUIRED, "OmniMedVQA", ("question", "gt_answer", "image_path")
                )
                for row, record, texts in rows:
                    item = self._item(
                        record, texts, self._image_root(root, texts[2], options), access, json_path, row, problems
                    )
                    if item is not None:
                        yield item

    def default_split_for(self, path: Path) -> str | None:
        """open-access; restricted-access when it is the only access folder present."""
        present = self.splits(path, self.layout(path) or "release")
        return present[0] if len(present) == 1 else self.default_split

    @staticmethod
    def _image_root(root: Path, image: str, options: ReadOptions) -> Path:
        """Where ``image_path`` names are relative to: the release folder, else ``--data-dir`` (restricted-access
        images come from the original datasets, placed where the user keeps them)."""
        if options.image_dir and not (root / image).is_file() and (Path(options.image_dir) / image).is_file():
            return Path(options.image_dir)
        return root

    def _item(
        self, record, texts: list[str], root: Path, access: str, json_path: Path, row: int, problems: list[Problem]
    ) -> BenchmarkItem | None:
        question, gold, image = texts
        options = {}
        for letter in "ABCD":
            text = text_field(record.get(f"option_{letter}"))
            if text is not None:
                options[letter] = text
        letter = letter_of(gold, options)
        if letter is None:
            problems.append(
                Problem(
                    str(json_path),
                    row,
                    f"gt_answer {gold!r} is none of the options {', '.join(f'{k}={v!r}' for k, v in options.items())}",
                )
            )
            return None
        return BenchmarkItem(
            benchmark=self.name,
            split=access,
            question_id=str(record.get("question_id", f"{json_path.stem}-{row}")),
            question=question,
            answer=letter,
            answer_type=MULTIPLE_CHOICE,
            images=(ImageSource(path=str(root / image)),),
            source=f"{json_path}:{row}",
            options=options,
            category=text_field(record.get("question_type")),
            modality=text_field(record.get("modality_type", record.get("modality"))),
            fields={"dataset": text_field(record.get("dataset")) or json_path.stem, "answer_text": options[letter]},
        )
