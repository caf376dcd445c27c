"""Token taxonomy: the spec, the rule tagger, projection onto model tokens, and the LLM judge.

>>> from cotsurvival.taxonomy import tag, load_spec
>>> spans = tag("So she has 16 - 3 = 13 eggs left.", question="Janet's ducks lay 16 eggs.")  # doctest: +SKIP
"""
from __future__ import annotations

from .spec import FINE_LABELS, TaxonomySpec, load_spec
from .tagger import Span, iter_tag, load_pipeline, project_spans, tag, tag_many

__all__ = ["FINE_LABELS", "Span", "TaxonomySpec", "iter_tag", "load_pipeline", "load_spec", "project_spans", "tag",
           "tag_many", "tag_run"]


def __getattr__(name):
    # tag_run pulls in pandas/pyarrow; import it lazily to keep `import cotsurvival.taxonomy` light.
    if name == "tag_run":
        from .runs import tag_run

        return tag_run
    raise AttributeError(name)
