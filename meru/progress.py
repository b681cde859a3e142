"""Plain progress lines for job logs (training, embedding, dataset generation).

One self-contained line per report, written to stderr and flushed, so a log file (Snakemake ``log:``,
``nohup``, a cluster job's output) shows progress without a terminal; no carriage returns, no bars::

    meru train meru/small-cpu: step 200/2000 (10.0%) | loss 3.1416 | 2,345 samples/s | 0.05 TFLOP/s | ETA 2m31s
    meru embed zeroshot_leaf: 1,024/2,000 images (50.0%) | 812 /s | ETA 1s
"""

from __future__ import annotations

import math
import sys
import time


def format_duration(seconds: float | None) -> str:
    """``3h02m``, ``2m31s``, ``12s`` (``?`` when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = round(max(seconds, 0.0))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class Progress:
    """Counts items towards ``total`` (None: unknown) and prints a line at most every ``every_s`` seconds
    (:meth:`update`) or whenever asked (:meth:`report`). Rate and ETA are over the whole run so far,
    counted from construction (or from ``start``, e.g. after resuming at ``done=start``)."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        unit: str = "items",
        every_s: float = 10.0,
        start: int = 0,
        stream=None,
    ):
        self.label, self.total, self.unit, self.every_s = label, total, unit, every_s
        self.done, self._start = start, start
        self._t0 = self._last = time.perf_counter()
        self.stream = stream

    def rate(self) -> float:
        dt = time.perf_counter() - self._t0
        return (self.done - self._start) / dt if dt > 0 else 0.0

    def eta_s(self) -> float | None:
        r = self.rate()
        if self.total is None or r <= 0:
            return None
        return (self.total - self.done) / r

    def line(self, *fields: str) -> str:
        count = f"{self.done:,}/{self.total:,}" if self.total is not None else f"{self.done:,}"
        pct = f" ({100.0 * self.done / self.total:.1f}%)" if self.total else ""
        parts = [f"{self.label}: {count} {self.unit}{pct}", *fields, f"{self.rate():,.0f} {self.unit}/s"]
        if self.total is not None:
            parts.append(f"ETA {format_duration(self.eta_s())}")
        return " | ".join(parts)

    def report(self, *fields: str) -> str:
        """Print and return the current line (``fields``: extra ``"name value"`` strings)."""
        text = self.line(*fields)
        stream = self.stream or sys.stderr
        print(text, file=stream, flush=True)
        self._last = time.perf_counter()
        return text

    def update(self, n: int = 1, *fields: str) -> str | None:
        """Count ``n`` more; print when ``every_s`` has passed since the last line, or at the total."""
        self.done += n
        finished = self.total is not None and self.done >= self.total
        if finished or time.perf_counter() - self._last >= self.every_s:
            return self.report(*fields)
        return None
