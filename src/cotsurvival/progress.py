"""Progress for every long loop: tqdm on a terminal or in Jupyter, plain lines in a log.

``progress`` arguments (``Progress``: ``True`` shows a bar, ``False`` nothing, a callable is called
with the number of items just finished) go through :class:`progress_bar`; code that drives a bar
itself calls :func:`make_bar`, a tqdm factory. Both print the same way:

tqdm redraws its bar in place with carriage returns and cursor-up escapes. Written to a file (a
cluster job's log, ``2> prune.log``) that becomes one unreadable line, or, with tqdm's own
``disable=None``, nothing at all. When stderr is not a terminal (and not a Jupyter kernel) the
bar here prints a plain line every ``COTSURVIVAL_PROGRESS_SECONDS`` seconds (default 30) and a
final line when it closes; bars of inner loops (``leave=False``) speak only when they last longer
than that interval, so a log stays short.
"""
from __future__ import annotations

import os
import re
import sys
from typing import IO, Callable, Iterable, Union

from tqdm import tqdm as _plain_tqdm

LOG_INTERVAL_ENV = "COTSURVIVAL_PROGRESS_SECONDS"
DEFAULT_LOG_INTERVAL = 30.0
_ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class LineStream:
    """A file-like wrapper that turns tqdm's in-place redraws into whole lines."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> int:
        for piece in re.split(r"[\r\n]", _ESCAPES.sub("", text)):
            piece = piece.rstrip()
            if piece.strip() and piece != self.last:  # skip blanks (tqdm clearing a line) and repeats
                self.stream.write(piece + "\n")
                self.last = piece
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


class _LogTqdm(_plain_tqdm):
    """tqdm that redraws only on its interval: ``set_postfix`` / ``set_description`` wait for the next line."""

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_postfix_str(self, s="", refresh=True):
        super().set_postfix_str(s, refresh=False)

    def set_description(self, desc=None, refresh=True):
        super().set_description(desc, refresh=False)


def log_interval() -> float:
    """Seconds between plain progress lines (``$COTSURVIVAL_PROGRESS_SECONDS``, default 30)."""
    try:
        return max(0.0, float(os.environ.get(LOG_INTERVAL_ENV, DEFAULT_LOG_INTERVAL)))
    except ValueError:
        return DEFAULT_LOG_INTERVAL


def _in_jupyter(stream) -> bool:
    return type(stream).__module__.startswith("ipykernel")


def is_interactive(stream=None) -> bool:
    """Whether ``stream`` (default stderr) shows a live bar: a terminal or a Jupyter kernel."""
    stream = sys.stderr if stream is None else stream
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):
        tty = False
    return tty or _in_jupyter(stream)


def make_bar(iterable: Iterable | None = None, *, total: float | None = None, desc: str | None = None,
                 unit: str = "it", disable: bool = False, leave: bool = True, initial: float = 0,
                 file: IO[str] | None = None, **kwargs):
    """A tqdm bar that stays readable wherever stderr goes (see the module docstring).

    Takes tqdm's common arguments; returns a tqdm object (``update``, ``set_postfix``, ``close``,
    context manager, iteration).
    """
    stream = sys.stderr if file is None else file
    common = dict(total=total, desc=desc, unit=unit, disable=disable, leave=leave, initial=initial, **kwargs)
    if is_interactive(stream):
        if _in_jupyter(stream):
            from tqdm.auto import tqdm as auto_tqdm

            return auto_tqdm(iterable, **common)
        return _plain_tqdm(iterable, file=stream, dynamic_ncols=True, **common)
    interval = log_interval()
    if not leave:
        common.setdefault("delay", interval)
    return _LogTqdm(iterable, file=LineStream(stream), mininterval=interval, maxinterval=max(interval, 10.0),
                       miniters=1, ascii=True, ncols=100, **common)


# ----------------------------------------------------------------------------- ``progress`` arguments
Progress = Union[bool, Callable[[int], None]]


class progress_bar:
    """Context manager with ``update(n)``: a tqdm bar for ``progress=True``, the callable, or nothing."""

    def __init__(self, progress: Progress, total: int | None, desc: str, unit: str = "chain") -> None:
        self.callback = progress if callable(progress) else None
        self.tqdm = None
        if progress is True:
            self.tqdm = make_bar(total=total, unit=unit, desc=desc)

    def __enter__(self) -> "progress_bar":
        return self

    def update(self, n: int = 1) -> None:
        if self.tqdm is not None:
            self.tqdm.update(n)
        if self.callback is not None:
            self.callback(n)

    def __exit__(self, *exc) -> bool:
        if self.tqdm is not None:
            self.tqdm.close()
        return False
