"""One run per output folder: an exclusive lock that the operating system drops when the process dies.

``train``, ``train-autoencoder``, ``eval``, ``convert`` and ``demo`` take it on the folder (or file)
they write before they write anything; a second run into the same place stops at once with one line
naming the holder's PID::

    with run_lock(checkpoint_dir, "train"):
        ...

The lock is ``fcntl.flock`` on a small file inside the folder (``.unimedvl.lock``, or
``.NAME.lock`` beside a single output file). The holder writes its PID and command into it; the
file itself is left behind, harmless: a flock belongs to the open file, so a SIGKILLed or crashed
holder leaves no stale lock, and the next run simply takes it. Under torchrun only rank 0 locks
(``enabled=``); a second job's rank 0 refuses and torchrun ends its other ranks.
On a system without ``fcntl`` (Windows) the lock is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from unimedvl.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".unimedvl.lock"


class FolderInUse(UserError):
    """Another live process holds the lock of this output folder."""


class RunLock:
    """An exclusive, non-blocking lock on ``folder/name``; ``acquire`` raises FolderInUse when taken."""

    def __init__(self, folder: str | Path, command: str, name: str = LOCK_NAME):
        self.folder, self.command, self.path = Path(folder), command, Path(folder) / name
        self._file: IO[bytes] | None = None

    @classmethod
    def for_file(cls, output: str | Path, command: str) -> RunLock:
        """A lock for one output file (``data/x.jsonl`` -> ``data/.x.jsonl.lock``), so other files of the folder stay free."""
        output = Path(output)
        return cls(output.parent, command, f".{output.name}.lock")

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> RunLock:
        if self._file is not None or fcntl is None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+b", buffering=0)  # never truncate before we hold it; unbuffered: a full disk
        # fails the write below, never a later close
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read(200).decode("utf-8", "replace").split()
            handle.close()
            pid = holder[0] if holder and holder[0].isdigit() else "unknown"
            what = f"`{holder[1]}` " if len(holder) > 1 and holder[1].isidentifier() else ""
            raise FolderInUse(
                f"{self.folder} is in use by another unimedvl {what}run (PID {pid}); wait for it to "
                "end or choose another output folder"
            ) from None
        except BaseException:
            handle.close()
            raise
        try:  # the PID is for the message of a second run only: a full disk must not stop this one here
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()} {self.command}\n".encode())
        except OSError:
            pass
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the last descriptor drops the flock
            self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextmanager
def run_lock(folder: str | Path, command: str, enabled: bool = True, name: str = LOCK_NAME) -> Iterator[None]:
    """Hold the folder's lock for the block (nothing when ``enabled`` is False, e.g. on ranks other than 0)."""
    if not enabled:
        yield
        return
    with RunLock(folder, command, name):
        yield
