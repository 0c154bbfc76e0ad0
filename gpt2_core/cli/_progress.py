"""A dependency-free progress bar for the command line (stderr; silent when not a terminal
unless forced)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, desc: str, unit: str = "it", stream: TextIO | None = None,
                 enabled: bool | None = None):
        self.total, self.desc, self.unit = max(total, 1), desc, unit
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.n, self.start, self._last = 0, time.perf_counter(), 0.0
        self.postfix = ""

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        self.n += n
        if postfix is not None:
            self.postfix = postfix
        now = time.perf_counter()
        if self.enabled and (now - self._last > 0.1 or self.n >= self.total):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = min(self.n / self.total, 1.0)
        bar = "#" * int(frac * 30)
        rate = self.n / max(now - self.start, 1e-9)
        self.stream.write(f"\r{self.desc} [{bar:<30}] {self.n}/{self.total} {self.unit} "
                          f"({rate:.1f} {self.unit}/s) {self.postfix}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
