"""Files that survive a crash: writes that replace a file whole, and readers of append-only JSON lines.

A killed process (or a full disk) must never leave a half-written checkpoint, report or state file
in place of a good one, and a reader of an append-only log (``results.jsonl``, ``metrics.jsonl``)
must not stop at the torn last line a kill leaves behind.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends, it replaces ``path`` in one rename.

    If the block raises (a crash, a full disk), the temporary file is removed and ``path`` is left
    as it was. ``fsync`` flushes the new file to disk before the rename.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        if fsync:
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str, fsync: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, fsync) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    """``obj`` as strict JSON (no NaN), written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def read_json_lines(path: str | os.PathLike[str], require: str | None = None) -> tuple[list[dict], int]:
    """The JSON objects of an append-only JSON-lines file, and how many lines were unreadable.

    Blank lines are skipped; a line that is not a JSON object (a torn write, stray text), or lacks
    the key ``require``, is counted, not raised. A missing file reads as empty.
    """
    path = Path(path)
    if not path.is_file():
        return [], 0
    rows, bad = [], 0
    for raw in path.read_bytes().splitlines():
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            bad += 1
            continue
        if isinstance(obj, dict) and (require is None or require in obj):
            rows.append(obj)
        else:
            bad += 1
    return rows, bad
