"""A benchmark folder -> our JSONL records: layout detection, split choice, images, failures.

:func:`open_benchmark` finds the reader's layout in a folder (or says which benchmark's layout it
looks like instead) and resolves the split; :func:`convert_benchmark` reads every question,
resolves its images (files in place; parquet / base64 bytes extracted through an
:class:`~unimedvl.benchmarks.images.ImageStore`; VLMEvalKit index references to the row they
name) and builds one record per question. A question that cannot be used (its image is missing
or broken, its row is malformed) is a :class:`~unimedvl.data.records.Problem` ``file:row``; with
``keep_failed`` it also becomes a record carrying ``unusable`` (the reason), which
``unimedvl eval`` counts as a failed sample, so the run goes on and the failures are counted.

A record (medical form, :mod:`unimedvl.data.records`)::

    {"main_task_type": "image_understanding", "sample_id": "vqa-rad-test-0",
     "input_img": [{"path": ...}], "message": [{"from": "human", "value": "<image>\\n{prompt}"},
                                               {"from": "gpt", "value": ANSWER}],
     "benchmark": "vqa-rad", "split": "test", "question_id": "0", "question": ..., "answer": ...,
     "answer_type": "closed|open|multiple_choice", "options": {"A": ...}, "category": ...,
     "question_type": CATEGORY, "modality": ..., "groups": {...}, "prompt_template": "short_answer",
     "paper_column": "VQA-RAD", "source": "file:row"}

``answer`` is the option letter for multiple choice; the gpt turn (the answer) is left out when
the publisher gives none. Image paths are relative to the JSONL's folder when the image lies
under it (extracted images), else absolute (images referenced in place).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unimedvl.benchmarks import READERS, get_reader
from unimedvl.benchmarks.images import ImageStore, check_file
from unimedvl.benchmarks.items import BenchmarkItem
from unimedvl.benchmarks.prompts import render
from unimedvl.benchmarks.published import count_warning
from unimedvl.benchmarks.reader import Reader, ReadOptions, listing
from unimedvl.data.records import IMAGE_TOKEN, Problem
from unimedvl.errors import UserError
from unimedvl.fileio import atomic_write_text

TASK_TYPE = "image_understanding"


@dataclass(frozen=True)
class BenchmarkSource:
    """A benchmark folder opened by its reader: which layout, which split."""

    reader: Reader
    path: Path
    layout: str
    split: str | None  # the publisher's split name; None: every row / every split
    options: ReadOptions

    @property
    def label(self) -> str:
        """``<benchmark>-<split>``: eval's run folder and the stats split column."""
        return self.reader.label(self.path, self.split, self.options)


@dataclass
class Conversion:
    """What :func:`convert_benchmark` read: the records, the problems and the counts."""

    source: BenchmarkSource
    records: list[dict[str, Any]] = field(default_factory=list)  # in file order; unusable ones last
    problems: list[Problem] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # (split, answer_type) -> usable questions
    failed: int = 0  # questions that cannot be used (each has a problem)
    unanswered: int = 0  # usable questions without a published answer (not scorable)
    store: ImageStore | None = None
    source_files: set[str] = field(default_factory=set)  # the files questions were read from (checksummed on demand)

    @property
    def usable(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """Counts per split and answer type, failures, images (what the commands print)."""
        lines = [
            (
                f"{self.source.reader.name} ({self.source.layout}) at {self.source.path}: "
                f"{self.usable} question(s) usable, {self.failed} failed"
            )
        ]
        for split in sorted({s for s, _ in self.counts}):
            per_type = ", ".join(f"{t} {n}" for (s, t), n in sorted(self.counts.items()) if s == split)
            lines.append(f"  {split}: {sum(n for (s, _), n in self.counts.items() if s == split)} ({per_type})")
        if self.unanswered:
            lines.append(f"  {self.unanswered} question(s) have no published answer (read, not scorable)")
        read = self.usable + self.failed
        warning = count_warning(
            self.source.reader.name, self.source.layout, self.source.split, self.source.options.language, read
        )
        if warning:
            lines.append(f"  {warning}")
        if self.store is not None and self.store.folder is not None and (self.store.written or self.store.reused):
            lines.append(
                f"  images extracted to {self.store.folder}: {self.store.written} new file(s); "
                f"{self.store.reused} image(s) were already there (shared or extracted before)"
            )
        return "\n".join(lines)


def open_benchmark(
    name: str, path: str | os.PathLike[str], split: str | None = None, options: ReadOptions | None = None
) -> BenchmarkSource:
    """The reader's view of ``path``; UserError naming the expected files when the layout is another.

    ``split`` None takes the reader's default (the test split, as papers report); ``all`` reads every split.
    """
    reader = get_reader(name)
    path = Path(path)
    options = options or ReadOptions()
    if not path.exists():
        raise UserError(f"{path}: not found; pass the folder (or file) of {reader.name}: {reader.expects}")
    layout = reader.layout(path)
    if layout is None:
        others = [n for n, cls in READERS.items() if n != reader.name and cls().layout(path) is not None]
        hint = f"; it looks like {' or '.join(others)} (use --benchmark {others[0]})" if others else ""
        raise UserError(f"{path}: not a {reader.name} layout: expected {reader.expects}; found {listing(path)}{hint}")
    if split is not None and split.lower() == "all":
        chosen = None
    else:
        chosen = reader.default_split_for(path) if split is None else reader.resolve_split(path, layout, split)
    if chosen is not None and reader.default_split is not None:  # a reader with fixed splits: check the name
        present = reader.splits(path, layout)
        if chosen not in present:
            raise UserError(
                f"{path}: no split {chosen!r} in this {reader.name} {layout}; splits here: "
                f"{', '.join(present) or 'none'} (or all)"
            )
    return BenchmarkSource(reader, path, layout, chosen, options)


def _where(source: str) -> tuple[str, int | None]:
    path, _, row = source.rpartition(":")
    return (path, int(row)) if row.isdigit() else (source, None)


def convert_benchmark(
    source: BenchmarkSource,
    image_dir: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    keep_failed: bool = False,
    check_headers: bool = False,
    check_images: bool = True,
) -> Conversion:
    """Every question of ``source`` as a record (see the module docstring).

    ``image_dir``: where image bytes are extracted (None: they are only checked). ``out_dir``: the
    JSONL's folder, which image paths under it are made relative to. ``check_headers``: read
    every image file's header too (validate-data), not only check that it exists. ``check_images``
    False: image files are not looked at (``unimedvl score`` needs the questions and answers only).
    """
    conv = Conversion(source, store=ImageStore(image_dir))
    reader_problems: list[Problem] = []
    slots: list[dict[str, Any] | None] = []
    pending: list[tuple[int, BenchmarkItem, str, str]] = []  # (slot, item, sample id, index it refers to)
    by_index: dict[str, list[str]] = {}  # VLMEvalKit index -> its resolved image paths
    seen: set[str] = set()
    root = Path(out_dir).resolve() if out_dir is not None else None
    items = source.reader.items(source.path, source.layout, source.split, source.options, reader_problems)
    for item in items:
        conv.source_files.add(_where(item.source)[0])
        paths, refs, why = [], [], None
        for image in item.images:
            if image.ref is not None:
                refs.append(image.ref)
            elif image.path is not None:
                why = why or (check_file(image.path, check_headers) if check_images else None)
                paths.append(_portable(image.path, root))
            else:
                try:
                    stored = conv.store.put(image.data)  # a bare name when only checking
                    paths.append(_portable(stored, root) if conv.store.folder is not None else stored)
                except UserError as err:
                    why = why or str(err)
        sid = _unique(f"{item.benchmark}-{item.split}-{item.question_id}", item, seen)
        if why is None and not refs:
            by_index.setdefault(item.question_id, paths)
        slots.append(None)
        if why is not None:
            _fail(conv, slots, len(slots) - 1, item, sid, why, keep_failed)
        elif refs:
            pending.append((len(slots) - 1, item, sid, refs[0]))
        else:
            slots[-1] = _record(conv, item, sid, paths)
    for slot, item, sid, ref in pending:  # references resolve once every row has been read (forward ones too)
        if ref in by_index:
            slots[slot] = _record(conv, item, sid, by_index[ref])
        else:
            _fail(
                conv,
                slots,
                slot,
                item,
                sid,
                f"the image cell refers to index {ref}, which has no image of its own in this file",
                keep_failed,
            )
    conv.records = [r for r in slots if r is not None]
    for problem in reader_problems:  # rows the reader could not read at all
        if problem.line is not None:
            conv.failed += 1
            if keep_failed:
                conv.records.append(
                    _unusable(source, f"{source.label}:{Path(problem.path).name}:{problem.line}", str(problem))
                )
    conv.problems = reader_problems + conv.problems
    if not conv.records and not conv.problems:
        conv.problems.append(Problem(str(source.path), None, f"no questions in split {source.split or 'all'}"))
    return conv


def _portable(path: str, root: Path | None) -> str:
    """``path`` relative to the JSONL's folder when under it, else absolute."""
    full = Path(path).resolve()
    if root is not None and full.is_relative_to(root):
        return str(full.relative_to(root))
    return str(full)


def _unique(sid: str, item: BenchmarkItem, seen: set[str]) -> str:
    """Sample ids must be unique (resume keys): a repeated publisher id gets its row appended."""
    if sid in seen:
        sid = f"{sid}@{_where(item.source)[1]}"
    seen.add(sid)
    return sid


def _fail(conv: Conversion, slots: list, slot: int, item: BenchmarkItem, sid: str, why: str, keep: bool) -> None:
    path, row = _where(item.source)
    conv.problems.append(Problem(path, row, f"{item.benchmark} question {item.question_id}: {why}"))
    conv.failed += 1
    if keep:
        slots[slot] = _unusable(conv.source, sid, f"{item.source}: {why}", item.category)


def _unusable(source: BenchmarkSource, sid: str, why: str, category: str | None = None) -> dict[str, Any]:
    """A record eval turns into a failed sample (it has no image to show the model)."""
    return {
        "main_task_type": TASK_TYPE,
        "sample_id": sid,
        "message": [{"from": "human", "value": "(unusable)"}],
        "benchmark": source.reader.name,
        "split": source.split or "all",
        "category": category,
        "unusable": why,
    }


def _record(conv: Conversion, item: BenchmarkItem, sid: str, paths: list[str]) -> dict[str, Any]:
    source = conv.source
    conv.counts[(item.split, item.answer_type)] += 1
    conv.unanswered += item.answer is None
    message = [{"from": "human", "value": IMAGE_TOKEN * len(paths) + "\n" + render(source.reader.prompt, item)}]
    if item.answer is not None:
        message.append({"from": "gpt", "value": item.answer})
    groups = {
        "category": item.category,
        "modality": item.modality,
        **{k: item.fields.get(k) for k in source.reader.breakdowns},
    }
    record: dict[str, Any] = {
        "main_task_type": TASK_TYPE,
        "sample_id": sid,
        "input_img": [{"path": p} for p in paths],
        "message": message,
        "benchmark": item.benchmark,
        "split": item.split,
        "question_id": item.question_id,
        "question": item.question,
        "answer": item.answer,
        "answer_type": item.answer_type,
        "category": item.category,
        "question_type": item.category,
        "modality": item.modality,
        "groups": {k: v for k, v in groups.items() if v is not None},
        "prompt_template": source.reader.prompt.name,
        "paper_column": source.reader.column(source.path),
        "source": item.source,
        "image_key": paths[0] if paths else None,  # questions of one image: one cluster
    }
    if item.options:
        record["options"] = item.options
    if item.hint:
        record["hint"] = item.hint
    if item.fields:
        record["fields"] = item.fields
    return record


def write_jsonl(records: list[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """The records as a JSONL file, written atomically (same records -> same bytes)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
