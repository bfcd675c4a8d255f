"""The results files of an evaluation run: results.jsonl (and results.rank*.jsonl under torchrun).

One line per sample, appended and fsync'ed as each sample finishes (:class:`ResultWriter`), read
back tolerantly (a torn last line is dropped, so that sample is redone) and merged into file order
(:func:`consolidate`). See :mod:`unimedvl.commands.eval` for the run folder as a whole and
:mod:`unimedvl.eval.runner.job` for the run.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from unimedvl.errors import DiskFullError
from unimedvl.fileio import atomic_write_text, is_disk_full, read_json_lines

RESULTS = "results.jsonl"


def read_lines(path: Path) -> tuple[list[dict], int]:
    """The result lines of one file and how many were unreadable (a truncated last line, usually)."""
    return read_json_lines(path, require="sample_id")


def finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities replaced by None: statistics.json must be strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj


def consolidate(run_dir: Path, order: dict[str, int], retry_failed: bool = False) -> list[dict]:
    """Merge results.jsonl and every results.rank*.jsonl into results.jsonl (file order, one line per
    sample id, unreadable lines dropped; failed lines dropped too with ``retry_failed``)."""
    files = [run_dir / RESULTS, *sorted(run_dir.glob("results.rank*.jsonl"))]
    kept: dict[str, dict] = {}
    dropped = 0
    for path in files:
        lines, bad = read_lines(path)
        dropped += bad
        for line in lines:
            if retry_failed and line.get("error"):
                continue
            kept.setdefault(str(line["sample_id"]), line)
    if dropped:
        print(
            f"eval: {run_dir}: dropped {dropped} unreadable result line(s) (an interrupted write); those "
            "samples are redone",
            file=sys.stderr,
        )
    merged = sorted(kept.values(), key=lambda l: (order.get(str(l["sample_id"]), len(order)), str(l["sample_id"])))
    if merged or (run_dir / RESULTS).is_file():
        atomic_write_text(run_dir / RESULTS, "".join(json.dumps(l, ensure_ascii=False) + "\n" for l in merged))
    for path in files[1:]:
        path.unlink(missing_ok=True)
    return merged


class ResultWriter:
    """Appends result lines, each flushed to disk before the next sample starts.

    On a full disk the partial line is cut off again (the file ends at its last whole line) and the
    run stops with a DiskFullError: the samples written so far are kept, a rerun continues.
    """

    def __init__(self, path: Path):
        self.path = path
        self.handle = path.open("ab")
        self.written = 0

    def write(self, line: dict) -> None:
        end = self.handle.tell()
        try:
            self.handle.write((json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8"))
            self.handle.flush()
            os.fsync(self.handle.fileno())
        except OSError as err:
            self._cut(end)
            if is_disk_full(err, self.path.parent):
                raise DiskFullError(
                    f"disk full while writing results in {self.path.parent}; {self.written} result "
                    "line(s) of this process are saved and intact; free space and rerun the same "
                    "command to continue"
                ) from None
            raise
        self.written += 1

    def _cut(self, end: int) -> None:
        """Drop what a failed write left after byte ``end`` (a truncation frees space, so it succeeds)."""
        try:
            os.ftruncate(self.handle.fileno(), end)
            self.handle.seek(end)
        except OSError:
            pass  # a reader drops a torn last line anyway

    def close(self) -> None:
        try:
            self.handle.close()
        except OSError:  # the buffer was already cut off and handed to the error above
            pass
