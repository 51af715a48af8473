"""Progress that fits its sink: live bars on a terminal, plain lines elsewhere.

On a terminal, ``progress`` is a tqdm bar. Elsewhere (CI logs, ``tee``, a file) a bar's
carriage-return updates become hundreds of lines, so it prints one plain line every
``LINE_SECONDS`` (and one at the end) instead.
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Optional, TextIO

LINE_SECONDS = 30.0  # one line this often when the sink is not a terminal


def is_terminal(stream: Optional[TextIO] = None) -> bool:
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def _length(iterable) -> Optional[int]:
    """``len(iterable)``, or None where it has none (a tf.data pipeline of unknown length
    raises TypeError for ``len``)."""
    try:
        return len(iterable)
    except TypeError:
        return None


class _Lines:
    """A tqdm stand-in that writes ``desc: n/total (p%), elapsed, rate`` lines."""

    def __init__(self, iterable=None, total=None, desc="", unit="it", stream=None,
                 every=LINE_SECONDS):
        self.iterable, self.desc, self.unit = iterable, desc, unit
        self.total = total if total is not None else _length(iterable)
        self.stream = stream or sys.stderr
        self.every = every
        self.n = 0
        self.postfix = ""
        self.start = self.last = time.monotonic()

    def __iter__(self):
        for x in self.iterable:
            yield x
            self.update(1)
        self.close()

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def set_postfix(self, **kwargs) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kwargs.items())

    def _line(self) -> str:
        elapsed = time.monotonic() - self.start
        of = f"/{self.total}" if self.total else ""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        rate = f", {self.n / elapsed:.2f} {self.unit}/s" if elapsed > 0 and self.n else ""
        post = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {self.n}{of} {self.unit}{pct}, {elapsed:.0f} s{rate}{post}"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            print(self._line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self.n:
            print(self._line(), file=self.stream, flush=True)
            self.n = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Silent(_Lines):
    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass


def progress(iterable: Optional[Iterable] = None, *, total: Optional[int] = None, desc: str = "",
             unit: str = "it", enabled: bool = True, stream: Optional[TextIO] = None,
             every: float = LINE_SECONDS):
    """A progress wrapper of ``iterable`` (or a manual one with ``update``): a tqdm bar on a
    terminal, a line every ``every`` seconds elsewhere, nothing when not ``enabled``."""
    stream = stream or sys.stderr
    if not enabled:
        return _Silent(iterable, total, desc, unit, stream)
    if is_terminal(stream):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, file=stream)
    return _Lines(iterable, total, desc, unit, stream, every)
