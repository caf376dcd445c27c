"""Registries: one place that maps each choice's name to its meaning and its implementation.

A :class:`Registry` is what the code validates against, what the CLI builds its choices and help
from, and where implementations are found by name (in the manner of spaCy's and inseq's
registries), so the three cannot drift. The names and their one-line meanings are declared where
the registry is made, in a module that imports nothing heavy, so ``cotsurvival --help`` does not
load torch; implementations attach themselves where they are defined::

    OBJECTIVES = Registry("--objective", {"joint": "...", "answer": "..."})

    @OBJECTIVES.register("answer")
    def answer_weights(n_kept, n_answer): ...

As a mapping a registry is ``name -> meaning`` (``list(OBJECTIVES)`` are the choices);
:meth:`Registry.resolve` returns the implementation and refuses an unknown name with E088 and a
"did you mean".
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Callable, Iterator

from .errors import CotSurvivalError


class Registry(Mapping):
    """Names -> one-line meanings (the mapping), and names -> implementations (:meth:`resolve`).

    Parameters
    ----------
    option : str
        How users name the choice (``"--objective"``); words the E088 error.
    meanings : mapping of str to str
        Every name, in the order the CLI lists them, with its one-line meaning.
    """

    def __init__(self, option: str, meanings: Mapping[str, str]) -> None:
        self.option = option
        self._meanings = dict(meanings)
        self._implementations: dict[str, Any] = {}

    # ------------------------------------------------------------------ mapping of meanings
    def __getitem__(self, name: str) -> str:
        return self._meanings[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._meanings)

    def __len__(self) -> int:
        return len(self._meanings)

    def __repr__(self) -> str:
        return f"Registry({self.option!r}, {list(self._meanings)})"

    # ------------------------------------------------------------------ implementations
    def register(self, name: str, implementation: Any = None) -> Callable[[Any], Any] | Any:
        """Attach ``implementation`` to ``name`` (usable as a decorator when it is omitted).

        Only declared names can be registered, once each: a typo in the code fails at import time.
        """
        if name not in self._meanings:
            raise KeyError(f"{self.option}: {name!r} is not declared (declared: {', '.join(self)})")

        def attach(value: Any) -> Any:
            if name in self._implementations and self._implementations[name] is not value:
                raise KeyError(f"{self.option}: {name!r} is registered twice")
            self._implementations[name] = value
            return value

        return attach if implementation is None else attach(implementation)

    def check(self, name: str) -> str:
        """``name`` if it is a declared choice; else E088 naming the choices (and the nearest one)."""
        if name in self._meanings:
            return name
        close = difflib.get_close_matches(str(name), list(self), n=1)
        choices = ", ".join(self) + (f" (did you mean {close[0]!r}?)" if close else "")
        raise CotSurvivalError("E088", option=self.option, value=name, choices=choices)

    def resolve(self, name: str) -> Any:
        """The implementation registered for ``name`` (E088 for an unknown name)."""
        self.check(name)
        if name not in self._implementations:
            raise LookupError(f"{self.option} {name!r} has no implementation registered yet "
                              f"(its module was not imported)")
        return self._implementations[name]

    def implementations(self) -> dict[str, Any]:
        """Name -> implementation, in declaration order, for the names registered so far."""
        return {name: self._implementations[name] for name in self if name in self._implementations}


#: Presentation that lower layers offer without importing it: a run's Jupyter views and result
#: figures live in the presentation layer (``cotsurvival.reports``), which builds on the run
#: directory and the results. The package root, the top layer, registers each as
#: ``"module:function"``; :func:`view` imports it on first use. The layers stay one-way and a
#: lower module never names a higher one.
VIEWS = Registry("view", {
    "run_html": "a run at a glance in Jupyter (RunDir._repr_html_)",
    "chain_view": "one chain coloured by category and shaded by survival (RunDir.chain)",
    "recovery_figure": "the answer-recovery figure (RecoveryResult.figure)",
    "onpolicy_sentences": "citable sentences of resampling importance beside survival (OnPolicyResult.citations)",
    "onpolicy_figure": "the on-policy figure (OnPolicyResult.figure)",
})


def view(name: str) -> Callable[..., Any]:
    """The presentation function registered as ``name`` in :data:`VIEWS` (imported on first use)."""
    from importlib import import_module  # only here: most runs never render a view

    module, _, attribute = VIEWS.resolve(name).partition(":")
    return getattr(import_module(module), attribute)


def lazy_attributes(package: str, names: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A package's ``__getattr__`` that imports each public name on first use.

    ``names`` maps a public name to the module (relative to ``package``) that defines it; the value
    is cached in the package's ``namespace`` so later lookups skip the hook. Packages use it to
    stay light to import (the CLI reads their registries without loading torch or matplotlib).
    """
    from importlib import import_module  # only here: the lazy packages' names, resolved on first use

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(names[name], package), name)
        namespace[name] = value
        return value

    return __getattr__
