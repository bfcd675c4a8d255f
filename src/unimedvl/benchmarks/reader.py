"""The interface every benchmark reader implements, and the helpers they share (JSON files, splits).

A reader is a small class: its ``name`` (the registry key), ``expects`` (the files it reads, shown
in errors), the splits it knows, and three methods: :meth:`Reader.layout` detects which of its
layouts a folder holds (None when it holds none), :meth:`Reader.splits` lists the splits present,
:meth:`Reader.items` yields the questions of one split, appending a Problem for each row or file
it cannot use.
"""

from __future__ import annotations

import abc
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from unimedvl.benchmarks.items import BenchmarkItem, text_field
from unimedvl.benchmarks.prompts import SHORT_ANSWER, PromptTemplate
from unimedvl.data.records import Problem
from unimedvl.errors import ConfigError

LANGUAGES = ("en", "zh", "all")


@dataclass(frozen=True)
class ReadOptions:
    """Choices that change which questions a reader yields."""

    language: str = "en"  # SLAKE: en (as papers report), zh or all
    image_dir: str | None = None  # LLaVA-Med: folder its ``image`` names are relative to (default: the JSON's)

    def __post_init__(self) -> None:
        if self.language not in LANGUAGES:
            raise ConfigError(f"--language {self.language!r}; choose one of {', '.join(LANGUAGES)}")


class Reader(abc.ABC):
    """Base class of the benchmark readers (see the module docstring)."""

    name: ClassVar[str]
    expects: ClassVar[str]  # one line: the files it reads
    default_split: ClassVar[str | None] = "test"  # None: every row (the source has no split)
    split_aliases: ClassVar[dict[str, str]] = {}  # other spellings users type -> the publisher's name
    prompt: ClassVar[PromptTemplate] = SHORT_ANSWER
    paper_column: ClassVar[str | None] = None  # the UniMedVL paper's table column this benchmark fills
    breakdowns: ClassVar[tuple[str, ...]] = ()  # item fields scored per value, besides category and modality

    @abc.abstractmethod
    def layout(self, path: Path) -> str | None:
        """The name of the layout ``path`` holds, or None when it is not this benchmark's."""

    @abc.abstractmethod
    def splits(self, path: Path, layout: str) -> list[str]:
        """The splits present under ``path``."""

    @abc.abstractmethod
    def items(
        self, path: Path, layout: str, split: str | None, options: ReadOptions, problems: list[Problem]
    ) -> Iterator[BenchmarkItem]:
        """The questions of ``split`` (None: all), in file order; Problems for what cannot be used."""

    def default_split_for(self, path: Path) -> str | None:
        """The split read when the user names none (``default_split``; a reader may look at ``path``)."""
        return self.default_split

    def split_name(self, split: str | None) -> str | None:
        """The publisher's spelling of a split a user typed (``val`` -> ``validation``, ...)."""
        if split is None:
            return None
        return self.split_aliases.get(split.lower(), split)

    def resolve_split(self, path: Path, layout: str, split: str) -> str:
        """The split a user typed, as the layout at ``path`` names it (default: :meth:`split_name`)."""
        return self.split_name(split) or split

    def column(self, path: Path) -> str | None:
        """The UniMedVL paper's table column a run on ``path`` belongs to (None: no such column)."""
        return self.paper_column

    def label(self, path: Path, split: str | None, options: ReadOptions) -> str:
        """The run label ``<benchmark>-<split>`` (eval writes OUT/<model_id>/<label>/)."""
        return f"{self.name}-{split or 'all'}"


def read_json(path: Path, problems: list[Problem]) -> Any:
    """A JSON file's content, or None with a whole-file Problem when it cannot be read.

    Problems with a line number are about one question (the eval counts each as a failed sample);
    a file that cannot be parsed at all is a whole-file problem (its position goes in the message).
    """
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))  # -sig: a byte-order mark is no part of the JSON
    except (OSError, UnicodeDecodeError) as err:
        problems.append(Problem(str(path), None, f"cannot read ({err})"))
    except json.JSONDecodeError as err:
        problems.append(Problem(str(path), None, f"malformed JSON ({err.msg} at line {err.lineno} column {err.colno})"))
    return None


def json_list(path: Path, problems: list[Problem]) -> list[Any]:
    """The records of a JSON file holding a list (or JSON Lines, one record a line); [] on a problem."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        problems.append(Problem(str(path), None, f"cannot read ({err})"))
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) > 1 and lines[0].lstrip().startswith("{"):  # JSON Lines
            out = []
            for number, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as line_err:
                    problems.append(Problem(str(path), number, f"malformed JSON ({line_err.msg})"))
            return out
        problems.append(Problem(str(path), None, f"malformed JSON ({err.msg} at line {err.lineno} column {err.colno})"))
        return []
    if not isinstance(data, list):
        problems.append(
            Problem(str(path), None, f"expected a JSON list of question records, got {type(data).__name__}")
        )
        return []
    return data


def json_records(path: Path, problems: list[Problem], required: tuple[str, ...], what: str) -> list[Any]:
    """The records of a JSON list file that holds ``what`` records; [] with one whole-file Problem when
    the file is unreadable or is another format (its first record lacks every required field)."""
    records = json_list(path, problems)
    first = next((r for r in records if isinstance(r, dict)), None)
    if records and (first is None or not any(k in first for k in required)):
        keys = ", ".join(sorted(first)[:12]) if first else "no objects"
        problems.append(
            Problem(
                str(path),
                None,
                f"not a {what} file: its records have none of the fields "
                f"{', '.join(required)} (first record has: {keys})",
            )
        )
        return []
    return records


def record_problem(record: Any, keys: tuple[str, ...]) -> str | None:
    """Why one record lacks what a reader needs, or None."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    missing = [k for k in keys if k not in record]
    if missing:
        return f"missing field(s) {', '.join(map(repr, missing))} (has {', '.join(sorted(record)) or 'none'})"
    return None


def question_rows(
    path: Path,
    problems: list[Problem],
    required: tuple[str, ...],
    what: str,
    texts: tuple[str, ...],
    keep: Callable[[dict[str, Any]], bool] | None = None,
) -> Iterator[tuple[int, dict[str, Any], list[str]]]:
    """(row, record, its ``texts`` fields stripped) for every record of a ``what`` JSON list that has the
    ``required`` fields and non-empty ``texts``; a Problem ``path:row`` for each record that has not.

    ``keep(record)`` False skips a record silently (another split or language): its problems are not this run's.
    """
    for row, record in enumerate(json_records(path, problems, required, what), start=1):
        why = record_problem(record, required)
        if why is None and keep is not None and not keep(record):
            continue
        values = [] if why else [text_field(record.get(k)) for k in texts]
        if why is None and None in values:
            why = f"empty {' or '.join(k for k, v in zip(texts, values) if v is None)}"
        if why:
            problems.append(Problem(str(path), row, why))
            continue
        yield row, record, values


def listing(path: Path, limit: int = 8) -> str:
    """A short description of what a folder holds, for "not this layout" messages."""
    if path.is_file():
        return f"a file ({path.name})"
    try:
        names = sorted(os.listdir(path))
    except OSError as err:
        return f"unreadable ({err})"
    shown = ", ".join(n + ("/" if (path / n).is_dir() else "") for n in names[:limit])
    return (shown + (f", ... ({len(names)} entries)" if len(names) > limit else "")) or "nothing"
