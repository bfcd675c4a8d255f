"""Files that survive a crash: writes that replace a file whole, and readers of append-only JSON lines.

A killed process (or a full disk) must never leave a half-written checkpoint, report or state file
in place of a good one, and a reader of an append-only log (``results.jsonl``, ``metrics.jsonl``)
must not stop at the torn last line a kill leaves behind. The shard files a safetensors index names
are resolved here too (:func:`shard_files`), never outside the index's folder.

A full disk is recognised wherever it surfaces (:func:`is_disk_full`): an ``OSError`` with ENOSPC
or EDQUOT, and the wrapped forms libraries raise: safetensors' ``SafetensorError`` ("No space left
on device (os error 28)"), and torch's zip writer, whose short write reads "unexpected pos 704 vs
598" (inside torch.distributed.checkpoint's ``CheckpointException``, which holds each rank's
failure), taken as a full disk when the filesystem has next to no space left.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from unimedvl.errors import CheckpointError, DiskFullError, capped

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXTS = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")
_SHORT_WRITE = "unexpected pos"  # torch's PyTorchStreamWriter after fwrite() wrote less than asked
NEARLY_FULL_BYTES = 64 * 2**20  # below this a short write is taken for a full disk


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


# ---------------------------------------------------------------------------------------------
# A full disk.


def _causes(err: BaseException) -> Iterator[BaseException]:
    """``err``, its causes and contexts, and the per-rank failures a CheckpointException holds."""
    seen: set[int] = set()
    stack = [err]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack += [current.__cause__, current.__context__]
        failures = getattr(current, "failures", None)  # torch.distributed.checkpoint.api.CheckpointException
        if isinstance(failures, dict):
            for failure in failures.values():
                stack.append(failure[0] if isinstance(failure, tuple) else failure)


def free_bytes(folder: str | os.PathLike[str]) -> int | None:
    """Bytes an unprivileged writer can still use on the filesystem of ``folder`` (None if unknown)."""
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def is_disk_full(err: BaseException, folder: str | os.PathLike[str] | None = None) -> bool:
    """True when ``err`` (or what it wraps) says the disk or the quota is full (see the module docstring)."""
    for cause in _causes(err):
        if isinstance(cause, OSError) and cause.errno in _FULL_ERRNOS:
            return True
        text = str(cause)
        if any(marker in text for marker in _FULL_TEXTS):
            return True
        if _SHORT_WRITE in text and folder is not None:
            free = free_bytes(folder)
            if free is not None and free < NEARLY_FULL_BYTES:
                return True
    return False


@contextlib.contextmanager
def disk_full_reported(what: str, folder: str | os.PathLike[str], advice: str) -> Iterator[None]:
    """Turn a full disk inside the block into one line: "disk full while WHAT in FOLDER; ADVICE".

    Anything else propagates unchanged (with its traceback: it is not a user's problem).
    """
    try:
        yield
    except DiskFullError:
        raise
    except Exception as err:
        if not is_disk_full(err, folder):
            raise
        raise DiskFullError(f"disk full while {what} in {folder}; {advice}") from None


def remove_stale_temporaries(folder: str | os.PathLike[str], patterns: tuple[str, ...] = ("*.tmp",)) -> list[Path]:
    """Delete what an interrupted writer left in ``folder`` (files or folders matching ``patterns``).

    Called at startup, before anything is written: a partial checkpoint of a run that died on a full
    disk would otherwise fill the disk again. Returns what was removed.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    removed = []
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def missing_file_problem(path: str | os.PathLike[str]) -> str:
    """Why ``path`` (which does not exist as far as ``os.path.exists`` can tell) cannot be opened: "file not
    found", or the symlink loop or the dangling link it really is."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "a symlink loop (a link that leads back to itself); point the link at a real file"
        if os.path.islink(path):
            return f"a symlink to {capped(os.readlink(path), 120)}, which does not exist; fix or remove the link"
        return "file not found"
    return "file not found"


def shard_files(index: Path, weight_map: object) -> dict[str, Path]:
    """key -> shard file of a ``*.safetensors.index.json``'s ``weight_map``, every shard inside the index's folder.

    An absolute name (``/etc/passwd``) or one that climbs out (``../other/ema.safetensors``) is a
    CheckpointError: a checkpoint never loads, or even opens, a file outside its folder. (A shard
    that is a symlink inside the folder is fine: that is how the Hugging Face cache stores files.)
    """
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index}: no 'weight_map' mapping")
    folder, checked, out = index.parent, {}, {}
    for key, name in weight_map.items():
        if not isinstance(name, str) or name not in checked:
            posix, windows = (PurePosixPath(name), PureWindowsPath(name)) if isinstance(name, str) else (None, None)
            if (
                posix is None
                or not posix.parts
                or posix.is_absolute()
                or windows.is_absolute()
                or windows.drive
                or ".." in posix.parts
                or ".." in windows.parts
            ):
                raise CheckpointError(
                    f"{index}: the shard {capped(name)!r} of {capped(key)} is not a file name inside "
                    f"{folder}; an index may name only files in its own folder (fix or remove it)"
                )
            checked[name] = folder / name
        out[key] = checked[name]
    return out
