"""Progress a person can read anywhere: a tqdm bar on a terminal, plain lines in logs, CI and ``nohup``.

When the stream is not a terminal a bar is noise (carriage returns, thousands of redraws in one
line), so :class:`Progress` writes one line instead, at most every ``interval_s`` seconds and at
the end::

    train: step 120/1400 (9%), elapsed 0:01:02, ETA 0:11:03, loss=2.31

The ETA comes from the rate of this run (steps resumed from a checkpoint are not counted in it).
Used by the trainer, ``train-autoencoder`` and ``eval``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

PLAIN_INTERVAL_S = 5.0  # seconds between plain lines at most often


def clock_text(seconds: float) -> str:
    """0:01:05 style (hours:minutes:seconds)."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


class Progress:
    """Counts steps towards ``total``; a bar on a terminal, else a plain line every ``interval_s`` seconds."""

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "step",
        initial: int = 0,
        file: TextIO | None = None,
        interval_s: float = PLAIN_INTERVAL_S,
        enabled: bool = True,
        bar: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.done = self.start = int(initial)
        self.file = file if file is not None else sys.stderr
        self.interval_s, self.enabled, self.clock = interval_s, enabled, clock
        self.t0 = self.last = clock()
        self.postfix: dict[str, str] = {}
        self.bar = None
        if enabled and (is_terminal(self.file) if bar is None else bar):
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=self.file)

    def update(self, n: int = 1, postfix: Mapping[str, Any] | None = None) -> None:
        if not self.enabled:
            return
        self.done += n
        if postfix is not None:
            self.postfix = {k: f"{v:.4g}" if isinstance(v, float) else str(v) for k, v in postfix.items()}
        if self.bar is not None:
            self.bar.update(n)
            if postfix is not None:
                self.bar.set_postfix(self.postfix, refresh=False)
            return
        now = self.clock()
        if now - self.last >= self.interval_s or self.done >= self.total:
            self.last = now
            print(self.line(now), file=self.file, flush=True)

    def line(self, now: float | None = None) -> str:
        """``desc: unit N/total (P%), elapsed H:MM:SS, ETA H:MM:SS[, postfix]``."""
        elapsed = (self.clock() if now is None else now) - self.t0
        ran = self.done - self.start
        left = max(0, self.total - self.done)
        eta = clock_text(elapsed / ran * left) if ran > 0 else "unknown"
        percent = 100.0 * self.done / self.total if self.total else 100.0
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        return (
            f"{self.desc}: {self.unit} {self.done}/{self.total} ({percent:.0f}%), elapsed {clock_text(elapsed)}, "
            f"ETA {eta}{extra}"
        )

    def write(self, text: str) -> None:
        """A message line that does not tear the bar."""
        if self.bar is not None:
            self.bar.write(text, file=self.file)
        else:
            print(text, file=self.file, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
