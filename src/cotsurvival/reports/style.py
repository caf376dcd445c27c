"""One look for every figure: sizes, fonts, and one colour per category.

Colours come from the taxonomy spec (``taxonomy-v1.json``) when it names them, so the report,
the viewer and the notebooks agree; otherwise from the Okabe–Ito palette, which stays distinct
under the common colour-vision deficiencies.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from ..registry import Registry
from ..taxonomy.spec import CATEGORIES, FINE_LABELS

#: Coarse categories and fine labels in the packaged taxonomy's order (the canonical order of every figure).
COARSE = CATEGORIES
FINE = FINE_LABELS

# Okabe & Ito (2008), "Color Universal Design". Fine labels share a hue family with their coarse
# category where the palette allows (narration has three labels, so it spans green/sky/yellow).
OKABE_ITO = {
    "orange": "#E69F00", "sky_blue": "#56B4E9", "bluish_green": "#009E73", "yellow": "#F0E442",
    "blue": "#0072B2", "vermillion": "#D55E00", "reddish_purple": "#CC79A7", "black": "#000000",
}
FALLBACK_COLOURS = {
    "symbolic_math": OKABE_ITO["blue"], "grammar": OKABE_ITO["orange"],
    "narration": OKABE_ITO["bluish_green"], "referential": OKABE_ITO["reddish_purple"],
    "SYMBOLIC_MATH": OKABE_ITO["blue"], "FUNCTION": OKABE_ITO["orange"],
    "VERBAL_MATH": OKABE_ITO["bluish_green"], "META_DISCOURSE": OKABE_ITO["sky_blue"], "CONTENT": OKABE_ITO["yellow"],
    "ENTITY_NAME": OKABE_ITO["reddish_purple"], "COREFERENCE": OKABE_ITO["vermillion"],
}
OTHER_COLOUR = "#BBBBBB"

#: Figure layouts (``--width``): name -> meaning; each resolves to its width in inches.
FIGURE_WIDTHS = Registry("--width", {"one": "one column (3.3 in)", "two": "two columns (6.9 in)"})
FIGURE_WIDTHS.register("one", 3.3)
FIGURE_WIDTHS.register("two", 6.9)
#: Figure widths in inches: one column and two columns of a typical two-column paper.
WIDTHS: dict[str, float] = FIGURE_WIDTHS.implementations()

RC = {
    "pdf.fonttype": 42,  # TrueType in the PDF, so journals accept it and text stays editable
    "ps.fonttype": 42,
    "font.family": "DejaVu Sans",
    "font.size": 7.5,
    "axes.titlesize": 8,
    "axes.labelsize": 7.5,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5,
    "legend.fontsize": 6.5,
    "legend.title_fontsize": 7,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.1,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "savefig.dpi": 300,
    "figure.dpi": 100,
}


def category_colours() -> dict[str, str]:
    """Colour (hex) of every coarse category and fine label.

    Returns
    -------
    dict
        Keys are the names in :data:`COARSE` and :data:`FINE` (and any extra the spec defines).
    """
    colours = dict(FALLBACK_COLOURS)
    colours.update(_spec_colours())
    return colours


def _spec_colours() -> dict[str, str]:
    # The spec is another module's file; a missing or invalid spec must not break the report.
    try:
        from ..taxonomy.spec import load_spec

        spec = load_spec()
        return {**dict(spec.category_colours), **dict(spec.label_colours)}
    except Exception:  # noqa: BLE001 - any failure means "use the fallback palette"
        return {}


def palette_for(names, colours: dict[str, str] | None = None) -> dict[str, str]:
    """Colour per name in ``names`` (unknown names get a neutral grey)."""
    colours = category_colours() if colours is None else colours
    return {name: colours.get(name, OTHER_COLOUR) for name in names}


def order_present(values, canonical) -> list[str]:
    """The canonical names present in ``values``, in canonical order, then any others sorted."""
    present = set(v for v in values if isinstance(v, str))
    return [c for c in canonical if c in present] + sorted(present - set(canonical))


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """Matplotlib rc settings for every report figure (restored afterwards)."""
    import matplotlib

    with matplotlib.rc_context(RC):
        yield


def add_footnote(fig, text: str) -> None:
    """A small note on the figure (e.g. that its ranks are approximate), in space reserved for it.

    The figure grows by the note's height and a constrained layout keeps everything else out of
    that band: at the bottom, or at the top when a figure-level legend already sits at the bottom.
    The note wraps to the figure's width, never clipped.
    """
    from textwrap import wrap

    width, height = fig.get_size_inches()
    # At most 3 points of width per character at 5 pt (DejaVu Sans averages less).
    lines = wrap(text, width=max(20, int(width * 72 / 3.0)))
    band_in = 0.05 + 0.085 * len(lines)
    fig.set_size_inches(width, height + band_in)
    band = band_in / (height + band_in)
    # matplotlib keeps where a legend was asked for only privately: "lower" for loc="outside lower ...".
    at_top = any(getattr(legend, "_loc", None) in (3, 4, 8) or "lower" in str(getattr(legend, "_outside_loc", ""))
                 for legend in fig.legends)
    engine = fig.get_layout_engine()
    rect = (0, 0, 1, 1 - band) if at_top else (0, band, 1, 1 - band)
    if engine is not None and hasattr(engine, "set") and "rect" in engine.get():
        engine.set(rect=rect)
    else:  # axes placed by hand (e.g. the chain text): keep each where it was, in inches
        for ax in fig.axes:
            box = ax.get_position()
            ax.set_position((box.x0, rect[1] + box.y0 * (1 - band), box.width, box.height * (1 - band)))
    y, va = (1 - 0.02 * band, "top") if at_top else (0.02 * band, "bottom")
    fig.text(0.005, y, "\n".join(lines), fontsize=5, color="0.3", ha="left", va=va, linespacing=1.2)


def save_figure(fig, stem: Path, footnote: str | None = None) -> list[Path]:
    """Write ``stem.png`` (300 dpi) and ``stem.pdf`` (TrueType fonts) and close the figure;
    ``footnote`` (e.g. the run's approximation) goes under it first.

    Returns
    -------
    list of Path
        The PNG and PDF paths.
    """
    import matplotlib.pyplot as plt

    if footnote:
        add_footnote(fig, footnote)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    # Fixed size (no bbox_inches="tight") so the files are exactly one or two columns wide.
    fig.savefig(paths[0], dpi=300, metadata={"Software": None})
    fig.savefig(paths[1], metadata={"Creator": "cotsurvival"})
    plt.close(fig)
    return paths
