"""Library noise captured and summarised, never printed raw.

Native libraries write straight to file descriptor 2: LAPACK's error handler prints lines such as
``** On entry to DLASCL parameter number 4 had an illegal value`` when a statistic meets a degenerate
matrix, and Python's ``sys.stderr`` redirection (``contextlib.redirect_stderr``) cannot see them.
:func:`captured_stderr` points descriptor 2 at a temporary file for the duration of a block and
hands back the lines, so the caller can say in one note what happened.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Iterator


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Capture everything written to file descriptor 2 (native code and Python alike) inside the block.

    Yields a list that holds the captured, non-blank lines once the block ends. Where descriptor 2
    cannot be duplicated (an embedded interpreter), nothing is captured and the list stays empty.
    """
    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield lines
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace")
            lines.extend(line.strip() for line in text.splitlines() if line.strip())


def summarise(lines: list[str], what: str = "numerical libraries") -> str | None:
    """One note for captured lines: how many, and the first distinct ones (``None`` when there are none)."""
    if not lines:
        return None
    distinct = list(dict.fromkeys(lines))
    shown = "; ".join(f"'{line[:120]}'" for line in distinct[:2])
    more = f" and {len(distinct) - 2} other distinct line(s)" if len(distinct) > 2 else ""
    return (f"{what} printed {len(lines)} message line(s), captured here instead of on stderr: {shown}{more}. "
            "A LAPACK 'DLASCL'/'illegal value' line means a fit met a degenerate (e.g. constant or NaN) "
            "input; the affected statistic is noted or left out above.")
