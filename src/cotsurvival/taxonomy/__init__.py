"""Token taxonomy: the spec, the rule tagger, projection onto model tokens, and the LLM judge.

>>> from cotsurvival.taxonomy import tag, load_spec
>>> spans = tag("So she has 16 - 3 = 13 eggs left.", question="Janet's ducks lay 16 eggs.")  # doctest: +SKIP

The names are imported on first use, so reading the spec's choices (the CLI's ``--level``) does
not load the tagger's lexicons.
"""
from __future__ import annotations

from ..registry import lazy_attributes

#: Public name -> the module (relative) that defines it.
_LAZY = {
    "FINE_LABELS": ".spec", "TaxonomySpec": ".spec", "load_spec": ".spec",
    "Span": ".tagger", "iter_tag": ".tagger", "load_pipeline": ".tagger", "project_spans": ".tagger",
    "tag": ".tagger", "tag_many": ".tagger",
    "tag_run": ".runs",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_attributes(__name__, _LAZY, globals())
