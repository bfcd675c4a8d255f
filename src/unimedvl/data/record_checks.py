"""Every problem of a JSONL record at once, for ``validate-data`` (the readers stop at the first).

:func:`record_problems` looks at one decoded JSON object and lists everything wrong with it:
key typos ("did you mean"), a key of the other form, wrong types, a misspelt ``main_task_type``,
a bad ``sample_id``, bad image entries and turns, placeholder counts. :func:`image_refs` gives the
image entries that can be read even when the record as a whole cannot, so that missing image
files are reported in the same run. :data:`TASK_TYPES` lists the task types this project knows
(README "Data format" prints them with their meaning).
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from unimedvl.data.records import (
    _LLAVA_KEYS,
    _MEDICAL_KEYS,
    IMAGE_TOKEN,
    ROLES,
    ImageRef,
    Record,
    _image_list,
    _lines,
    _llava_images,
    parse_record,
    resolve_image_path,
)
from unimedvl.errors import DataError

# main_task_type -> what it means. Others are allowed (a new task keeps its own name in the
# statistics); a near miss of one of these is reported as a typo.
TASK_TYPES: dict[str, str] = {
    "image_understanding": "questions about the input image(s) (VQA, diagnosis, quality); a text answer",
    "report_generation": "a free-text report about the input image(s); scored with BLEU / ROUGE-L / METEOR",
    "text_only": "a conversation without images",
    "denoising": "restoration: a noisy input image -> the clean image",
    "deblurring": "restoration: a blurred input image -> the sharp image",
    "super_resolution": "restoration: a downsampled input image -> the full-resolution image",
    "motion_correction": "restoration: an input with motion artefacts -> the corrected image",
    "stain_translation": "H&E input -> the IHC-stained image (virtual staining)",
    "counterfactual_generation": "input image -> the image with a finding removed or added, and an explanation",
    "text_to_image": "a text prompt -> an output image (no input image)",
    "multimodal_input_output": "any images in and out (the reference's generic type)",
}
_KEY_CUTOFF = 0.75  # difflib ratio above which an unknown key is taken for a typo of a known one
_TASK_CUTOFF = 0.8  # the same for main_task_type values


def _close(word: str, choices, cutoff: float) -> str | None:
    match = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=cutoff)
    return match[0] if match else None


def _collect(problems: list[str], check: Callable[[], Any]) -> Any:
    """Run one check; its DataError becomes a problem (returns None then)."""
    try:
        return check()
    except DataError as err:
        problems.append(str(err))
        return None


def _key_problems(obj: dict, known: set[str], other: set[str], form: str) -> list[str]:
    problems = []
    for key in obj:
        if key in known:
            continue
        if key in other:
            other_form = "LLaVA" if form == "medical" else "medical"
            problems.append(
                f"key '{key}' belongs to the {other_form} form, not to this {form} record; "
                f"use the {form} form's keys ({', '.join(sorted(known))})"
            )
            continue
        match = _close(str(key), known, _KEY_CUTOFF)
        if match:
            problems.append(f"unknown key '{key}': did you mean '{match}'?")
    return problems


def _image_problems(obj: dict, key: str) -> list[str]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        return [f"'{key}' must be a list of {{path, height, width}} objects, got {type(value).__name__}"]
    problems: list[str] = []
    for i, item in enumerate(value):
        try:
            _image_list({key: [item]}, key, "")
        except DataError as err:
            problems.append(str(err).replace(f"'{key}'[0]", f"'{key}'[{i}]"))
    return problems


def _turn_problems(raw: Any, key: str, inputs: int | None, outputs: int | None) -> list[str]:
    """Problems of the turns; the placeholder counts are checked against the image counts given (None: unknown)."""
    if not isinstance(raw, list) or not raw:
        return [f"'{key}' must be a non-empty list of {{from, value}} turns"]
    problems, counts = [], {"human": 0, "gpt": 0}
    for i, turn in enumerate(raw):
        if not isinstance(turn, dict):
            problems.append(f"'{key}'[{i}] must be an object with 'from' and 'value', got {type(turn).__name__}")
            continue
        role, value = turn.get("from"), turn.get("value")
        if role not in ROLES:
            problems.append(f"'{key}'[{i}].from must be 'human' or 'gpt', got {role!r}")
        if not isinstance(value, str):
            problems.append(f"'{key}'[{i}].value must be a string, got {type(value).__name__}")
        elif role in ROLES:
            counts[role] += value.count(IMAGE_TOKEN)
    for role, images, what in (("human", inputs, "input images"), ("gpt", outputs, "output images")):
        if images is not None and counts[role] != images:
            problems.append(
                f"{counts[role]} {IMAGE_TOKEN} placeholder(s) in {role} turns but {images} {what}: "
                f"{role} placeholders take the {what} in order, so the counts must be equal"
            )
    return problems


def _count(obj: dict, key: str, problems_before: int, problems: list[str]) -> int | None:
    """How many images ``key`` holds when all of them are valid (None when some are not: counts unknown)."""
    value = obj.get(key)
    if len(problems) != problems_before:
        return None
    return len(value) if isinstance(value, list) else 0


def record_problems(obj: Any) -> list[str]:
    """Everything wrong with one decoded JSONL object (empty when it is a valid record of a known shape).

    Image files are not opened here (see :func:`image_refs`); an unknown ``main_task_type`` that is no
    near miss of :data:`TASK_TYPES` is allowed.
    """
    if not isinstance(obj, dict):
        return [f"expected a JSON object per line, got {type(obj).__name__}"]
    if "message" in obj:
        form, known, other, id_key = "medical", _MEDICAL_KEYS, _LLAVA_KEYS - _MEDICAL_KEYS, "sample_id"
    elif "conversations" in obj:
        form, known, other, id_key = "llava", _LLAVA_KEYS, _MEDICAL_KEYS - _LLAVA_KEYS, "id"
    else:
        problems = _key_problems(obj, _MEDICAL_KEYS | _LLAVA_KEYS, set(), "medical")
        return problems + ["missing 'message' (medical form) or 'conversations' (LLaVA form)"]
    problems = _key_problems(obj, known, other, form)
    if form == "medical":
        task = obj.get("main_task_type")
        if not isinstance(task, str) or not task.strip():
            problems.append(
                f"'main_task_type' must be a non-empty string, got {task!r} (e.g. "
                f"{', '.join(list(TASK_TYPES)[:4])}; README lists the known ones)"
            )
        elif task not in TASK_TYPES and (match := _close(task, TASK_TYPES, _TASK_CUTOFF)):
            problems.append(f"unknown main_task_type '{task}': did you mean '{match}'?")
        degrade = obj.get("degrade_type")
        if degrade is not None and not isinstance(degrade, str):
            problems.append(f"'degrade_type' must be a string, got {degrade!r}")
        before = len(problems)
        problems += _image_problems(obj, "input_img")
        inputs = _count(obj, "input_img", before, problems)
        before = len(problems)
        problems += _image_problems(obj, "output_img")
        outputs = _count(obj, "output_img", before, problems)
        problems += _turn_problems(obj["message"], "message", inputs, outputs)
    else:
        refs = _collect(problems, lambda: _llava_images(obj, ""))
        problems += _turn_problems(obj["conversations"], "conversations", None if refs is None else len(refs), 0)
    sample_id = obj.get(id_key)
    if sample_id not in (None, "") and (isinstance(sample_id, bool) or not isinstance(sample_id, (str, int))):
        problems.append(f"'{id_key}' must be a string or an integer, got {sample_id!r}")
    return problems


def image_refs(obj: Any, data_dir: str | os.PathLike[str]) -> list[tuple[str, int, ImageRef]]:
    """(role, 1-based number, ImageRef) of every image entry that can be read, even in an invalid record."""
    if not isinstance(obj, dict):
        return []
    data_dir = os.fspath(data_dir)
    out: list[tuple[str, int, ImageRef]] = []
    if "conversations" in obj and "message" not in obj:
        refs = _collect([], lambda: _llava_images(obj, data_dir)) or ()
        return [("input", i, ref) for i, ref in enumerate(refs, start=1)]
    for role, key in (("input", "input_img"), ("output", "output_img")):
        value = obj.get(key)
        for number, item in enumerate(value if isinstance(value, list) else [], start=1):
            path = item if isinstance(item, str) else item.get("path") if isinstance(item, dict) else None
            if isinstance(path, str) and path.strip():  # its declared sizes may be wrong: only the file counts here
                out.append((role, number, ImageRef(path, resolve_image_path(path, data_dir))))
    return out


def read_checked(
    path: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None
) -> Iterator[tuple[int, Any, Record | None, list[str]]]:
    """(line, decoded object or None, Record or None, every problem) for each non-blank line of a JSONL file.

    The Record is None when the line cannot be used; its problems are then never empty. A usable record may
    still have problems (a key typo, a misspelt task type). The file must exist (see ``_file_problem``).
    """
    folder = os.path.dirname(os.fspath(path)) if data_dir is None else os.fspath(data_dir)
    for number, raw in _lines(path):
        try:
            obj = json.loads(raw.decode("utf-8-sig"))
        except UnicodeDecodeError as err:
            yield number, None, None, [f"not UTF-8 text ({err.reason} at byte {err.start})"]
            continue
        except json.JSONDecodeError as err:
            yield number, None, None, [f"malformed JSON ({err.msg} at column {err.colno})"]
            continue
        problems = record_problems(obj)
        try:
            record = parse_record(
                obj, folder, default_id=f"{Path(path).name}:{number}", source=f"{os.fspath(path)}:{number}"
            )
        except DataError as err:
            record, problems = None, problems or [str(err)]
        yield number, obj, record, problems
