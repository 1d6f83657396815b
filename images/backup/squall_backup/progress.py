"""Progress of long work (bytes, items, elapsed): a status line on a terminal, JSON log lines otherwise.

On a TTY the line is redrawn in place at most every ``TTY_INTERVAL`` seconds; elsewhere (a container's
log, a pipe) one structured log line is written every ``LOG_INTERVAL`` seconds, and a last one when the
work ends, so a long restore or verify shows it is alive without flooding the log.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, TextIO

TTY_INTERVAL = 0.2
LOG_INTERVAL = 5.0


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class Progress:
    def __init__(self, task: str, log: Callable[[dict[str, Any]], None], *, items: str = "items",
                 total_bytes: int | None = None, stream: TextIO | None = None, interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.task = task
        self.items_name = items
        self.total_bytes = total_bytes
        self._log = log
        self._stream = stream if stream is not None and _isatty(stream) else None
        self._interval = interval if interval is not None else (TTY_INTERVAL if self._stream else LOG_INTERVAL)
        self._clock = clock
        self._started = clock()
        self._last = self._started
        self._lock = threading.Lock()  # add() may be called from worker threads
        self.bytes = 0
        self.items = 0

    def add(self, nbytes: int = 0, items: int = 0) -> None:
        with self._lock:
            self.bytes += nbytes
            self.items += items
            now = self._clock()
            if now - self._last < self._interval:
                return
            self._last = now
        self._emit(final=False)

    def finish(self) -> None:
        self._emit(final=True)

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task, "bytes": self.bytes, self.items_name: self.items,
                               "elapsed_seconds": round(self._clock() - self._started, 1)}
        if self.total_bytes:
            out["total_bytes"] = self.total_bytes
        return out

    def _emit(self, *, final: bool) -> None:
        f = self.fields()
        if self._stream is None:
            self._log({**f, "done": final})
            return
        done = f" of {_size(self.total_bytes)} ({100 * self.bytes // self.total_bytes}%)" if self.total_bytes else ""
        line = (f"\r{self.task}: {_size(self.bytes)}{done}, {self.items} {self.items_name}, "
                f"{f['elapsed_seconds']:.1f} s")
        self._stream.write(line + ("\n" if final else ""))
        self._stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
