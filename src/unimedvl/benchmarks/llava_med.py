"""LLaVA-Med conversation JSON: the VQA ``test.json`` / ``train.json`` files of its fine-tuning recipe.

Fact sheet section 6a (``microsoft/LLaVA-Med``: ``llava/eval/run_eval*.py``, ``model_vqa_med.py``):
a JSON list of ``{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."},
{"from": "gpt", "value": ANSWER}], "answer_type"}`` records; some files misspell the key as
``conversatons`` (LLaVA-Med's loader tries both, and so does this one). The question is the first
human turn without ``<image>``, the answer the first gpt turn. ``answer_type`` is CLOSED / OPEN
(the PathVQA files also use ``yes/no``, ``other``, ``number``); without one, yes/no answers are
closed.

PATH is the JSON file (its split is the file's name, ``test``) or the folder holding
``<split>.json``. Images are named relative to ``--data-dir`` when given, else to the JSON's
folder, else to its ``images/`` subfolder. The dataset is recognised from the folder names
LLaVA-Med's batch script looks for (``data_RAD`` / ``vqa_rad`` -> VQA-RAD, ``pvqa`` -> PathVQA,
``Slake1.0`` -> SLAKE) so that the paper table can place the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from unimedvl.benchmarks.items import BenchmarkItem, ImageSource, answer_type_of, text_field
from unimedvl.benchmarks.reader import Reader, ReadOptions, json_records
from unimedvl.data.records import IMAGE_TOKEN, Problem

# The metadata of a Hugging Face save_to_disk folder or Arrow cache: JSON, but no split of questions.
HF_METADATA = ("dataset_dict.json", "dataset_info.json", "state.json")
DATASET_FOLDERS = {"data_rad": "VQA-RAD", "vqa_rad": "VQA-RAD", "pvqa": "PathVQA", "slake1.0": "SLAKE"}
_KEYS = ("conversations", "conversatons")


def _split_files(path: Path) -> list[Path]:
    return [p for p in path.glob("*.json") if p.name not in HF_METADATA]


class LlavaMed(Reader):
    """LLaVA-Med VQA conversation JSON."""

    name = "llava-med"
    expects = "a LLaVA-Med JSON list of {id, image, conversations, answer_type} (test.json), or its folder"

    def layout(self, path: Path) -> str | None:
        if path.is_file():
            return "json" if path.suffix == ".json" else None
        return "json" if _split_files(path) and not (path / "imgs").is_dir() else None

    def splits(self, path: Path, layout: str) -> list[str]:
        return [path.stem] if path.is_file() else sorted(p.stem for p in _split_files(path))

    def default_split_for(self, path: Path) -> str | None:
        return path.stem if path.is_file() else self.default_split  # a file is its own split

    def column(self, path: Path) -> str | None:
        folders = [p.name.lower() for p in (path if path.is_dir() else path.parent).resolve().parents]
        here = (path if path.is_dir() else path.parent).resolve().name.lower()
        return next((DATASET_FOLDERS[f] for f in [here, *folders] if f in DATASET_FOLDERS), None)

    def items(
        self, path: Path, layout: str, split: str | None, options: ReadOptions, problems: list[Problem]
    ) -> Iterator[BenchmarkItem]:
        if path.is_file():
            if split is not None and split != path.stem:
                problems.append(Problem(str(path), None, f"this file holds split {path.stem!r}, not {split!r}"))
                return
            files = [path]
        else:
            files = [path / f"{s}.json" for s in ([split] if split is not None else self.splits(path, layout))]
        for json_path in files:
            if not json_path.is_file():
                problems.append(Problem(str(json_path), None, "not found"))
                continue
            image_dir = Path(options.image_dir) if options.image_dir else json_path.parent
            for row, record in enumerate(json_records(json_path, problems, _KEYS, "LLaVA-Med conversation"), start=1):
                item = self._item(record, json_path, row, image_dir, problems)
                if item is not None:
                    yield item

    def _item(
        self, record, json_path: Path, row: int, image_dir: Path, problems: list[Problem]
    ) -> BenchmarkItem | None:
        def problem(message: str) -> None:
            problems.append(Problem(str(json_path), row, message))

        if not isinstance(record, dict):
            problem(f"expected a JSON object, got {type(record).__name__}")
            return None
        turns = record.get("conversations", record.get("conversatons"))
        if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
            problem("'conversations' must be a list of {from, value} turns")
            return None
        human = next((t.get("value") for t in turns if t.get("from") == "human"), None)
        gpt = next((t.get("value") for t in turns if t.get("from") == "gpt"), None)
        question = text_field(str(human).replace(IMAGE_TOKEN, "")) if human is not None else None
        answer = text_field(gpt)
        image = text_field(record.get("image"))
        if question is None or answer is None or image is None:
            problem("needs an image, a human question and a gpt answer")
            return None
        path = image_dir / image
        if not path.is_file() and (image_dir / "images" / image).is_file():
            path = image_dir / "images" / image
        return BenchmarkItem(
            benchmark=self.name,
            split=json_path.stem,
            question_id=str(record.get("id", row - 1)),
            question=question,
            answer=answer,
            answer_type=answer_type_of(record.get("answer_type"), answer),
            images=(ImageSource(path=str(path)),),
            source=f"{json_path}:{row}",
        )
