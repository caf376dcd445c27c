"""Report figures and index.html on synthetic runs: files, sizes, dpi, fonts, escaping, numbers."""
from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cotsurvival.cli import main
from cotsurvival.errors import CotSurvivalError
from cotsurvival.reports import build_report, chain_html, run_summary_html
from cotsurvival.reports.figures import FIGURES
from cotsurvival.testing import synthetic_run

ALL_STEMS = [spec.stem for spec in FIGURES]


def add_attention(run, n_layers=3, seed=0):
    """attention.parquet whose answer attention grows with survival (so rho > 0)."""
    rng = np.random.default_rng(seed)
    for i in run.part_indices("tokens"):
        tokens = run.read_part("tokens", i)
        frame = pd.DataFrame({"chain_index": i, "chain_id": tokens["chain_id"], "position": tokens["position"],
                              "surprisal": rng.gamma(2.0, 1.0, len(tokens))})
        for layer in range(n_layers):
            signal = tokens["survival"].to_numpy() * (layer + 1)
            frame[f"attn_answer_L{layer:02d}"] = np.exp(signal + rng.normal(0, 0.5, len(tokens))) / 100
            frame[f"attn_later_L{layer:02d}"] = np.exp(rng.normal(0, 0.5, len(tokens))) / 100
        run.write_part("attention", i, frame)
    return run


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    run = add_attention(synthetic_run(root / "run", n_chains=5, n_tokens=18, seed=3))
    stats = run.stats_dir
    stats.mkdir()
    (stats / "stats.json").write_text(json.dumps({"n_tokens": 123}))
    pd.DataFrame({"category": ["symbolic_math", "<b>grammar</b>"], "median": [0.8125, 0.25]}).to_csv(
        stats / "summary_category.csv", index=False)
    (stats / "citations.md").write_text("- Kaplan & Meier (1958) <script>alert(1)</script>\n")
    return run, build_report(run, root / "out")


def test_every_figure_written_as_png_and_pdf_in_both_widths(report):
    run, result = report
    assert result.skipped == {}
    assert sorted(result.figures) == sorted(ALL_STEMS)
    for stem in ALL_STEMS:
        for width, inches in (("one", 3.3), ("two", 6.9)):
            png = result.index.parent / f"{stem}_{width}.png"
            with Image.open(png) as image:
                assert image.size[0] == round(inches * 300)
                assert image.info["dpi"] == pytest.approx((300, 300), abs=0.5)
            pdf = (result.index.parent / f"{stem}_{width}.pdf").read_bytes()
            assert pdf.startswith(b"%PDF")
            assert b"/FontFile2" in pdf  # TrueType embedded (pdf.fonttype 42)
            assert b"/Subtype /Type3" not in pdf
            assert len(re.findall(rb"/Type /Page\b", pdf)) == 1


def test_index_is_self_contained_and_escaped(report):
    run, result = report
    page = result.index.read_text(encoding="utf-8")
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(ALL_STEMS)
    with Image.open(io.BytesIO(base64.b64decode(images[0]))) as image:
        assert image.size[0] == 2070  # the two-column variant is shown
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page  # the report page has no script at all
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # citations.md shown as text
    assert "&lt;b&gt;grammar&lt;/b&gt;" in page and "0.8125" in page  # stats table, escaped
    assert "fig1_kaplan_meier_one.pdf" in page


def test_summary_numbers_equal_the_run(report):
    run, _ = report
    tokens = pd.read_parquet(run.table_dir("tokens"))
    labels = pd.read_parquet(run.table_dir("labels"))  # rule labels: their own table since issue 12
    tokens = tokens.merge(labels[labels["source"] == "rule"][["chain_index", "position", "category"]],
                          on=["chain_index", "position"], validate="1:1")
    html = run_summary_html(run)
    for category, group in tokens.groupby("category"):
        assert f"<td>{len(group):,}</td><td>{group['survival'].median():.3f}</td>" in html
    assert f"<td>{run.read_manifest()['n_chains']}</td>" in html


def test_missing_data_skips_figures_with_a_note(tmp_path):
    run = synthetic_run(tmp_path / "run", n_chains=3, n_tokens=12, tagged=False, baselines=False)
    result = build_report(run, tmp_path / "out", widths=("one",), run_analysis=False)
    assert "fig6_objective" in result.figures  # needs no tags
    assert {"fig1_kaplan_meier", "fig4_orderings", "fig7_attention", "fig8_chain"} <= set(result.skipped)
    assert "cotsurvival tag" in result.skipped["fig1_kaplan_meier"]
    page = result.index.read_text(encoding="utf-8")
    assert page.count('class="note">Figure omitted') == len(result.skipped)
    assert "cotsurvival analyze" in page
    assert not (tmp_path / "out" / "fig1_kaplan_meier_one.png").exists()


def test_bad_width_is_a_user_error(tmp_path):
    run = synthetic_run(tmp_path / "run", n_chains=2, n_tokens=8)
    with pytest.raises(CotSurvivalError) as info:
        build_report(run, tmp_path / "out", widths=("three",))
    assert info.value.code == "E050"


def test_chain_html_escapes_and_shades(tmp_path):
    run = synthetic_run(tmp_path / "run", n_chains=2, n_tokens=8)
    tokens = run.read_part("tokens", 0)
    tokens.loc[0, "text"] = '<img src=x onerror="alert(1)">'
    run.write_part("tokens", 0, tokens)
    html = chain_html(run, 0)
    assert "<img" not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert html.count("\" title=\"") == len(tokens)  # one shaded span per token
    with pytest.raises(CotSurvivalError) as info:
        chain_html(run, 9)
    assert info.value.code == "E051"


def test_cli_report(tmp_path, capsys):
    run = synthetic_run(tmp_path / "run", n_chains=3, n_tokens=10)
    assert main(["report", str(run.path), "--out", str(tmp_path / "out"), "--width", "one", "--no-analyze"]) == 0
    assert (tmp_path / "out" / "index.html").is_file()
    assert (tmp_path / "out" / "fig3_composition_one.pdf").is_file()
    assert not (tmp_path / "out" / "fig3_composition_two.pdf").exists()
    assert "skipped fig7_attention" in capsys.readouterr().out
