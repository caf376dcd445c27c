"""Build the API reference from the docstrings with pdoc, offline: ``python tools/api_docs.py [OUT]``.

Every public module is listed explicitly: pdoc follows a package's ``__all__``, and the packages
list their public functions, not their modules.
"""
from __future__ import annotations

import pkgutil
import sys
import warnings
from pathlib import Path

import pdoc
import pdoc.render

import cotsurvival


def public_modules() -> list[str]:
    """``cotsurvival`` and every submodule whose dotted name has no part starting with ``_``."""
    names = [info.name for info in pkgutil.walk_packages(cotsurvival.__path__, "cotsurvival.")]
    return ["cotsurvival", *sorted(n for n in names if not any(p.startswith("_") for p in n.split(".")))]


def build(out: Path) -> Path:
    """Write the HTML reference of every public module to ``out``; return ``out/index.html``."""
    pdoc.render.configure(docformat="numpy", search=False)  # no search index: nothing fetched, nothing to serve
    with warnings.catch_warnings():
        # a module a package's __all__ also names (analysis.analyze) is added twice, documented once
        warnings.filterwarnings("ignore", message="The module specification .* has already been added")
        pdoc.pdoc(*public_modules(), output_directory=Path(out))
    return Path(out) / "index.html"


if __name__ == "__main__":
    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/api")))
