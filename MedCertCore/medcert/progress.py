"""Progress reporting: stages with a fraction, delivered to a callback (CLI prints, Slicer polls)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

ProgressFn = Callable[[str, float], None]
"""``fn(stage, fraction)``: stage is a short human label, fraction in [0, 1]."""


def silent(stage: str, fraction: float) -> None:
    """A progress callback that reports nothing."""


class StderrProgress:
    """Prints one line per stage change to stderr with elapsed seconds."""

    def __init__(self, prefix: str = "medcert") -> None:
        self._prefix = prefix
        self._start = time.perf_counter()
        self._last = ""

    def __call__(self, stage: str, fraction: float) -> None:
        if stage == self._last:
            return
        self._last = stage
        elapsed = time.perf_counter() - self._start
        print(f"[{self._prefix} {elapsed:6.1f}s] {stage}", file=sys.stderr, flush=True)
