"""Typed records for the JSONL training/evaluation data (spec/medical.md section 1).

Two on-disk forms are read into one normalised :class:`Record`:

* the medical form: ``main_task_type``, optional ``degrade_type`` / ``sample_id``, optional
  ``input_img`` / ``output_img`` lists of ``{path, height, width}``, and ``message``, a list of
  ``{from: human|gpt, value}`` turns;
* the LLaVA form: ``image`` (a path or a list of paths), ``conversations`` (same turn shape) and an
  optional ``id``.

Image placement rule: every ``<image>`` placeholder in a *human* turn takes the next *input* image,
every placeholder in a *gpt* turn takes the next *output* image, in reading order. The numbers must
match exactly; a record that leaves an image unplaced (or a placeholder empty) is a DataError,
because silently dropping or inventing an image changes what the model is trained on.

Image paths keep any ``#key=value`` fragment (see :mod:`unimedvl.imaging.medical_io`) and are
resolved against the dataset's ``data_dir`` (by default the folder holding the JSONL file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unimedvl.errors import DataError
from unimedvl.fileio import missing_file_problem

IMAGE_TOKEN = "<image>"
ROLES = ("human", "gpt")
LLAVA_UNDERSTANDING = "image_understanding"  # task_type given to LLaVA records with images
LLAVA_TEXT_ONLY = "text_only"  # task_type given to LLaVA records without images

_MEDICAL_KEYS = {"main_task_type", "degrade_type", "sample_id", "input_img", "output_img", "message"}
_LLAVA_KEYS = {"id", "image", "conversations"}


@dataclass(frozen=True)
class ImageRef:
    """One image named by a record: where it is and the size the record claims for it."""

    rel_path: str  # the path as written in the record (may carry a ``#key=value`` fragment)
    path: str  # rel_path resolved against data_dir (absolute paths are kept); fragment kept
    height: int | None = None  # height declared in the record, if any
    width: int | None = None  # width declared in the record, if any


@dataclass(frozen=True)
class Turn:
    """One conversation turn: its role and its text cut at the ``<image>`` placeholders.

    ``texts`` has one more entry than ``images``: the turn reads
    ``texts[0], images[0], texts[1], images[1], ..., texts[-1]``.
    """

    role: str  # "human" (no loss; its images are inputs) or "gpt" (CE on text; images are outputs)
    value: str  # the turn's text as written, placeholders included
    texts: tuple[str, ...]  # text between placeholders (len(images) + 1 entries, may be empty)
    images: tuple[ImageRef, ...]  # images at this turn's placeholders, in order

    def parts(self, strip: bool = True) -> list[str | ImageRef]:
        """The turn as an interleaved list of text pieces and images, in reading order.

        With ``strip`` (default) text pieces are stripped of surrounding whitespace and empty
        pieces dropped, so ``"<image>\\n\\nDescribe."`` gives ``[image, "Describe."]``.
        """
        out: list[str | ImageRef] = []
        for i, text in enumerate(self.texts):
            piece = text.strip() if strip else text
            if piece:
                out.append(piece)
            if i < len(self.images):
                out.append(self.images[i])
        return out

    @property
    def text(self) -> str:
        """The turn's text with the placeholders removed (pieces joined by a newline)."""
        return "\n".join(t.strip() for t in self.texts if t.strip())


@dataclass(frozen=True)
class Record:
    """One training/evaluation sample, whichever JSONL form it came from."""

    sample_id: str  # given id, or "<file name>:<line>" (stable while the file is unchanged)
    task_type: str  # main_task_type (LLaVA: image_understanding / text_only)
    input_images: tuple[ImageRef, ...]  # images placed in human turns, in order
    output_images: tuple[ImageRef, ...]  # images placed in gpt turns (generation targets)
    turns: tuple[Turn, ...]  # the conversation, in order
    degrade_type: str | None = None  # restoration sub-type (e.g. "noise"), if given
    source: str = ""  # "path:line" the record was read from (for messages)
    form: str = "medical"  # "medical" or "llava": which on-disk form it was read from
    extra: Mapping[str, Any] = field(default_factory=dict)  # unrecognised top-level keys, untouched

    @property
    def images(self) -> tuple[ImageRef, ...]:
        """All images: inputs, then outputs."""
        return self.input_images + self.output_images


@dataclass(frozen=True)
class Problem:
    """A problem found in a data file, printed as ``path:line: message``."""

    path: str  # the file at fault
    line: int | None  # 1-based line number, or None for a whole-file problem
    message: str  # what is wrong and what to do

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}" if self.line is not None else f"{self.path}: {self.message}"


def outside_data_dir(path_spec: str, data_dir: str | os.PathLike[str]) -> bool:
    """True when the file ``path_spec`` names (fragment removed) lies outside ``data_dir`` once ``..``,
    absolute paths and symbolic links are resolved: a record that reaches for other files."""
    path = path_spec if "#" not in path_spec or os.path.exists(path_spec) else path_spec.rsplit("#", 1)[0]
    real, root = os.path.realpath(path), os.path.realpath(os.fspath(data_dir))
    return os.path.commonpath([real, root]) != root


def confinement_problem(record: Record, data_dir: str | os.PathLike[str]) -> str | None:
    """Why ``record`` reaches outside ``data_dir`` (its first such image), or None when it does not."""
    for ref in record.images:
        if outside_data_dir(ref.path, data_dir):
            return (
                f"image {ref.rel_path} lies outside the data folder {os.fspath(data_dir)} (through '..', an "
                "absolute path or a symbolic link)"
            )
    return None


def resolve_image_path(rel_path: str, data_dir: str | os.PathLike[str]) -> str:
    """``rel_path`` joined to ``data_dir`` unless it is absolute; a ``#fragment`` is kept."""
    if os.path.isabs(rel_path) or not str(data_dir):
        return rel_path
    return os.path.join(os.fspath(data_dir), rel_path)


def split_placeholders(value: str) -> list[str]:
    """Text pieces around each ``<image>`` placeholder (``n`` placeholders give ``n + 1`` pieces)."""
    return value.split(IMAGE_TOKEN)


# ---------------------------------------------------------------------------------------------
# Parsing one object.


def _image_list(obj: Mapping[str, Any], key: str, data_dir: str) -> tuple[ImageRef, ...]:
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise DataError(f"'{key}' must be a list of {{path, height, width}} objects, got {type(value).__name__}")
    refs = []
    for i, item in enumerate(value):
        where = f"'{key}'[{i}]"
        if isinstance(item, str):  # a bare path is unambiguous; accept it
            item = {"path": item}
        if not isinstance(item, dict):
            raise DataError(f"{where} must be an object with 'path' (and 'height', 'width'), got {type(item).__name__}")
        path = item.get("path")
        if not isinstance(path, str) or not path.strip():
            raise DataError(f"{where} needs a non-empty string 'path'")
        sizes = {}
        for dim in ("height", "width"):
            size = item.get(dim)
            if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
                raise DataError(f"{where}.{dim} must be a positive integer, got {size!r}")
            sizes[dim] = size
        refs.append(ImageRef(path, resolve_image_path(path, data_dir), sizes["height"], sizes["width"]))
    return tuple(refs)


def _llava_images(obj: Mapping[str, Any], data_dir: str) -> tuple[ImageRef, ...]:
    value = obj.get("image")
    if value is None:
        return ()
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list) or not all(isinstance(p, str) and p.strip() for p in paths):
        raise DataError(f"'image' must be a path or a list of paths, got {value!r}")
    return tuple(ImageRef(p, resolve_image_path(p, data_dir)) for p in paths)


def _turns(raw: Any, key: str, inputs: tuple[ImageRef, ...], outputs: tuple[ImageRef, ...]) -> tuple[Turn, ...]:
    if not isinstance(raw, list) or not raw:
        raise DataError(f"'{key}' must be a non-empty list of {{from, value}} turns")
    counts = {"human": 0, "gpt": 0}
    for i, turn in enumerate(raw):
        if not isinstance(turn, dict):
            raise DataError(f"'{key}'[{i}] must be an object with 'from' and 'value', got {type(turn).__name__}")
        role, value = turn.get("from"), turn.get("value")
        if role not in ROLES:
            raise DataError(f"'{key}'[{i}].from must be 'human' or 'gpt', got {role!r}")
        if not isinstance(value, str):
            raise DataError(f"'{key}'[{i}].value must be a string, got {type(value).__name__}")
        counts[role] += value.count(IMAGE_TOKEN)
    for role, images, images_key in (("human", inputs, "input images"), ("gpt", outputs, "output images")):
        if counts[role] != len(images):
            raise DataError(
                f"{counts[role]} {IMAGE_TOKEN} placeholder(s) in {role} turns but {len(images)} {images_key}: "
                f"{role} placeholders take the {images_key} in order, so the counts must be equal"
            )
    queues = {"human": list(inputs), "gpt": list(outputs)}
    turns = []
    for turn in raw:
        role, value = turn["from"], turn["value"]
        texts = split_placeholders(value)
        n = len(texts) - 1
        taken, queues[role] = queues[role][:n], queues[role][n:]
        turns.append(Turn(role, value, tuple(texts), tuple(taken)))
    return tuple(turns)


def parse_record(obj: Any, data_dir: str | os.PathLike[str] = "", *, default_id: str = "", source: str = "") -> Record:
    """A Record from one decoded JSON object; DataError (no location prefix) when it is invalid.

    ``default_id`` is used when the object carries no ``sample_id`` (or LLaVA ``id``).
    """
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object per line, got {type(obj).__name__}")
    data_dir = os.fspath(data_dir)
    if "message" in obj:
        form, id_key = "medical", "sample_id"
        task = obj.get("main_task_type")
        if not isinstance(task, str) or not task.strip():
            raise DataError("'main_task_type' must be a non-empty string (e.g. image_understanding, denoising)")
        degrade = obj.get("degrade_type")
        if degrade is not None and not isinstance(degrade, str):
            raise DataError(f"'degrade_type' must be a string, got {degrade!r}")
        inputs = _image_list(obj, "input_img", data_dir)
        outputs = _image_list(obj, "output_img", data_dir)
        turns = _turns(obj["message"], "message", inputs, outputs)
        known = _MEDICAL_KEYS
    elif "conversations" in obj:
        form, id_key, degrade = "llava", "id", None
        inputs, outputs = _llava_images(obj, data_dir), ()
        task = LLAVA_UNDERSTANDING if inputs else LLAVA_TEXT_ONLY
        turns = _turns(obj["conversations"], "conversations", inputs, outputs)
        known = _LLAVA_KEYS
    else:
        raise DataError("missing 'message' (medical form) or 'conversations' (LLaVA form)")
    sample_id = obj.get(id_key)
    if sample_id is None or sample_id == "":
        sample_id = default_id
    elif isinstance(sample_id, bool) or not isinstance(sample_id, (str, int)):
        raise DataError(f"'{id_key}' must be a string or an integer, got {sample_id!r}")
    extra = {k: v for k, v in obj.items() if k not in known}
    return Record(
        sample_id=str(sample_id),
        task_type=task,
        input_images=inputs,
        output_images=outputs,
        turns=turns,
        degrade_type=degrade,
        source=source,
        form=form,
        extra=extra,
    )


def _parse_raw(
    text: str | bytes, path: str | os.PathLike[str], line: int, data_dir: str | os.PathLike[str] | None
) -> Record:
    """parse_line without the location prefix on errors."""
    if data_dir is None:
        data_dir = os.path.dirname(os.fspath(path))
    try:
        # utf-8-sig: editors on Windows start a file with a byte-order mark; it is no part of the record.
        text = text.decode("utf-8-sig") if isinstance(text, bytes) else text.removeprefix("\ufeff")
        obj = json.loads(text)
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise DataError(f"malformed JSON ({err.msg} at column {err.colno})") from None
    return parse_record(obj, data_dir, default_id=f"{Path(path).name}:{line}", source=f"{os.fspath(path)}:{line}")


def parse_line(
    text: str | bytes, path: str | os.PathLike[str], line: int, data_dir: str | os.PathLike[str] | None = None
) -> Record:
    """A Record from one JSONL line; DataError ``path:line: message`` when it is invalid.

    For readers that fetch lines themselves (shuffled, sharded or resumed at an offset).
    The derived sample id is ``<file name>:<line>``, so the line number must be the true one.
    Image paths resolve against ``data_dir`` (default: the folder holding ``path``).
    """
    try:
        return _parse_raw(text, path, line, data_dir)
    except DataError as err:
        raise DataError(f"{os.fspath(path)}:{line}: {err}") from None


# ---------------------------------------------------------------------------------------------
# Reading files.


def _file_problem(path: str | os.PathLike[str]) -> str | None:
    """Why the file cannot be read as a JSONL file, or None when it can."""
    path = Path(path)
    if not path.exists():
        return missing_file_problem(path)
    if not path.is_file():
        return "not a file"
    if not os.access(path, os.R_OK):
        return "not readable (check its permissions)"
    return None


def _lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line) for every non-blank line."""
    with Path(path).open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                yield number, raw


def read_jsonl(path: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None) -> Iterator[Record]:
    """Every record of a JSONL file; stops with DataError ``path:line: message`` at the first bad one.

    Blank lines are skipped. Image paths resolve against ``data_dir`` (default: the file's folder).
    """
    problem = _file_problem(path)
    if problem:
        raise DataError(f"{os.fspath(path)}: {problem}")
    for number, raw in _lines(path):
        yield parse_line(raw, path, number, data_dir)


def read_jsonl_lenient(
    path: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None, problems: list[Problem]
) -> Iterator[Record]:
    """Like :func:`read_jsonl` but skips bad records, appending a :class:`Problem` for each.

    A missing or unreadable file is appended as a whole-file problem and yields nothing.
    """
    spath = os.fspath(path)
    problem = _file_problem(path)
    if problem:
        problems.append(Problem(spath, None, problem))
        return
    for number, raw in _lines(path):
        try:
            yield _parse_raw(raw, path, number, data_dir)
        except DataError as err:
            problems.append(Problem(spath, number, str(err)))
