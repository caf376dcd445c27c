"""What ``progress`` means in every stage: ``True`` shows a tqdm bar, ``False`` shows nothing.

A callable is also accepted (0.1.0's ``tag_run(progress=bar.update)``) and called with the number
of items just finished.
"""
from __future__ import annotations

from typing import Callable, Union

Progress = Union[bool, Callable[[int], None]]


class progress_bar:
    """Context manager with ``update(n)``: a tqdm bar for ``progress=True``, the callable, or nothing."""

    def __init__(self, progress: Progress, total: int | None, desc: str, unit: str = "chain") -> None:
        self.callback = progress if callable(progress) else None
        self.tqdm = None
        if progress is True:
            from tqdm import tqdm

            self.tqdm = tqdm(total=total, unit=unit, desc=desc, disable=None)

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
