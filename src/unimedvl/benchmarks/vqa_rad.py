"""VQA-RAD: the original OSF release, or the Hugging Face parquet snapshot (detected from the folder).

Release (osf.io/89kps; fact sheet section 1a): ``VQA_RAD Dataset Public.json`` - one JSON list of
2,248 records with the fields ``qid``, ``phrase_type``, ``qid_linked_id``, ``image_case_url``,
``image_name``, ``image_organ``, ``evaluation``, ``question``, ``question_rephrase``,
``question_relation``, ``question_frame``, ``question_type``, ``answer``, ``answer_type`` - and the
image folder ``VQA_RAD Image Folder/`` (``synpic54610.jpg``, ...). The split is in
``phrase_type``: test = ``test_freeform`` + ``test_para`` (451 questions), train = ``freeform`` +
``para`` (1,797). ``answer_type`` is CLOSED / OPEN; public loaders apply ``strip().upper()``
first, which suggests stray case or spaces in a few records (the exact variants are unconfirmed),
so it is normalised here too. ``question_type`` (PRES, ABN, POS, MODALITY, ORGAN, PLANE, SIZE,
ATTRIB, COLOR, COUNT, OTHER; combined values such as "PRES, POS" may occur - the full value set is
unconfirmed) becomes the category, upper-cased and stripped; ``image_organ`` (HEAD, CHEST, ABD)
is kept as ``organ``. The release has no modality field.

The release may be extracted one level down (``PATH/<folder>/VQA_RAD Dataset Public.json``).
Parquet snapshot (``flaviagiammarino/vqa-rad``), also as downloaded by ``load_dataset`` or saved with
``save_to_disk``: :mod:`unimedvl.benchmarks.hf_parquet`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from unimedvl.benchmarks import hf_parquet
from unimedvl.benchmarks.items import BenchmarkItem, ImageSource, answer_type_of, text_field
from unimedvl.benchmarks.reader import Reader, ReadOptions, question_rows
from unimedvl.data.records import Problem

RELEASE_JSON = "VQA_RAD Dataset Public.json"
IMAGE_FOLDER = "VQA_RAD Image Folder"
PHRASE_SPLITS = {"freeform": "train", "para": "train", "test_freeform": "test", "test_para": "test"}
_REQUIRED = ("qid", "phrase_type", "image_name", "question", "answer")


class VqaRad(Reader):
    """VQA-RAD, release JSON or parquet snapshot."""

    name = "vqa-rad"
    expects = (
        f"the OSF release ('{RELEASE_JSON}' + '{IMAGE_FOLDER}/') or the Hugging Face snapshot (data/<split>-*.parquet)"
    )
    paper_column = "VQA-RAD"
    breakdowns = ("organ",)

    @staticmethod
    def release_root(path: Path) -> Path | None:
        """The folder holding the release JSON: ``path`` (or the JSON itself), or one level down."""
        if path.is_file():
            return path.parent if path.name == RELEASE_JSON else None
        if (path / RELEASE_JSON).is_file():
            return path
        below = sorted(p.parent for p in path.glob(f"*/{RELEASE_JSON}"))
        return below[0] if below else None

    def layout(self, path: Path) -> str | None:
        if self.release_root(path) is not None:
            return "release"
        return "parquet" if hf_parquet.shard_files(path) else None

    def splits(self, path: Path, layout: str) -> list[str]:
        return ["test", "train"] if layout == "release" else hf_parquet.splits(path)

    def items(
        self, path: Path, layout: str, split: str | None, options: ReadOptions, problems: list[Problem]
    ) -> Iterator[BenchmarkItem]:
        if layout == "parquet":
            yield from hf_parquet.read_split(path, self.name, split, problems)
            return
        root = self.release_root(path) or path
        json_path = root / RELEASE_JSON

        def phrase(record) -> str:
            return str(record["phrase_type"]).strip().lower()

        def in_split(record) -> bool:  # an unknown phrase_type is kept, to be reported below
            return split is None or PHRASE_SPLITS.get(phrase(record), split) == split

        texts = ("question", "answer", "image_name")
        for row, record, (question, answer, image) in question_rows(
            json_path, problems, _REQUIRED, "VQA-RAD release", texts, in_split
        ):
            record_split = PHRASE_SPLITS.get(phrase(record))
            if record_split is None:
                problems.append(
                    Problem(
                        str(json_path),
                        row,
                        f"phrase_type {record['phrase_type']!r} is none of "
                        f"{', '.join(PHRASE_SPLITS)}; its split is unknown",
                    )
                )
                continue
            category = text_field(record.get("question_type"))
            organ = text_field(record.get("image_organ"))
            yield BenchmarkItem(
                benchmark=self.name,
                split=record_split,
                question_id=str(record["qid"]),
                question=question,
                answer=answer,
                answer_type=answer_type_of(record.get("answer_type"), answer),
                images=(ImageSource(path=str(root / IMAGE_FOLDER / image)),),
                source=f"{json_path}:{row}",
                category=category.upper() if category else None,
                fields={
                    "organ": organ.upper() if organ else None,
                    "phrase_type": phrase(record),
                    "qid_linked_id": record.get("qid_linked_id"),
                },
            )
