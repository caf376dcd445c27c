"""Report figures and index.html on synthetic runs: files, sizes, dpi, fonts, escaping, numbers."""
from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cotsurvival.analysis import AnalysisResult, analyze, load_run
from cotsurvival.chains import parse_chain_selection
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


EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A real analysis of a small run; stats.json then gets a primary result and markup to escape."""
    root = tmp_path_factory.mktemp("report")
    run = add_attention(synthetic_run(root / "run", n_chains=5, n_tokens=18, seed=3))
    analyze(run, n_boot=50, mixed=False)
    path = run.stats_dir / "stats.json"
    stats = json.loads(path.read_text())
    # The headline as the analysis writes it (stats.json["primary"] and the first citation).
    stats["primary"] = {"estimate": 0.2345678, "ci_low": 0.1234567, "ci_high": 0.3456789, "p_value": 0.00123,
                        "n_chains": 5, "n_tokens": 90, "test": "sign-flip <b>test</b>",
                        "power": {"n_chains_needed": 12, "power": 0.8123}}
    stats["citations"] = ["Headline: symbolic math outlived grammar in 5 chains."] + stats["citations"]
    stats["citations"].append(f"Kaplan & Meier (1958) {EVIL}")
    stats["tables"]["summary_category"][1]["method"] = "<b>grammar</b>"
    path.write_text(json.dumps(stats))
    return run, build_report(run, root / "out")


def _at(stats: dict, source: str):
    value = stats
    for part in source.split("/"):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def _printed_equal(text: str, value) -> bool:
    """Is ``text`` ``value`` printed to the digits shown (half a unit in the last digit)?"""
    text = text.replace(",", "")
    mantissa, _, exponent = text.partition("e")
    decimals = len(mantissa.partition(".")[2])
    tolerance = 0.5 * 10.0 ** (-decimals) * 10.0 ** int(exponent or 0)
    return abs(float(text) - float(value)) <= tolerance * (1 + 1e-9)


DECIMAL = re.compile(r"-?\d+\.\d+(?:e[-+]?\d+)?")


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
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # a citation shown as text
    assert "&lt;b&gt;grammar&lt;/b&gt;" in page and "sign-flip &lt;b&gt;test&lt;/b&gt;" in page
    assert "fig1_kaplan_meier_one.pdf" in page


def check_page_quotes_stats(page: str, stats: dict) -> set[str]:
    """Every number in the headline, summary, tests and tables equals its stats.json value; returns the paths."""
    cells = re.findall(r'class="num" data-src="([^"]+)">([^<]*)<', page)
    for source, text in cells:
        assert _printed_equal(text, _at(stats, html.unescape(source))), (source, text)
    # No number is printed outside a traceable cell: every other cell of every table is text.
    start = page.index('<section id="summary">')
    body = page[start:page.index("<details>")] if "<details>" in page else page[start:]
    body = re.sub(r'<table class="cs-summary">.*?</table>', "", body, flags=re.S)  # the manifest's settings
    for text in re.findall(r"<td>([^<]*)</td>", body):
        assert not DECIMAL.fullmatch(text.strip()) and not text.strip().replace(",", "").isdigit(), text
    # The citations are the stored sentences, in order.
    shown = re.findall(r"<li>([^<]*)</li>", page[page.index('<section id="citations">'):])
    assert [html.unescape(t) for t in shown] == stats["citations"]
    return {html.unescape(s) for s, _ in cells}


def check_figures_quote_stats(result, stats: dict) -> None:
    """Figure annotations quote stats.json, and no figure prints a decimal it did not quote."""
    for stem, quotes in result.quotes.items():
        texts = " | ".join(result.texts.get(stem, []))
        for quote in quotes:
            assert _printed_equal(quote.text, _at(stats, "/".join(map(str, quote.source)))), (stem, quote)
            assert quote.text in texts
        if not stem.startswith("fig8"):  # figure 8 prints the chain's own text
            quoted = {q.text for q in quotes}
            for number in DECIMAL.findall(texts):
                assert number in quoted, (stem, number)


def test_every_number_on_the_page_is_the_stored_one(report):
    run, result = report
    stats = json.loads((run.stats_dir / "stats.json").read_text())
    page = result.index.read_text(encoding="utf-8")
    sources = check_page_quotes_stats(page, stats)
    assert len(sources) > 200
    # The headline, the summary medians and the tests are all quoted from the file.
    assert {"primary/estimate", "primary/ci_low", "primary/ci_high", "primary/p_value", "primary/n_chains",
            "primary/power/n_chains_needed"} <= sources
    for i, row in enumerate(stats["tables"]["summary_category"]):
        assert f"tables/summary_category/{i}/median" in sources
    assert "tests/logrank_category/chi2" in sources and "tests/tau/mean" in sources
    start = page.index('<section id="headline">')
    assert "Headline: symbolic math outlived grammar in 5 chains." in page[start:page.index("</section>", start)]


def test_every_number_in_the_figures_is_the_stored_one(report):
    run, result = report
    stats = json.loads((run.stats_dir / "stats.json").read_text())
    check_figures_quote_stats(result, stats)
    sources = {q.source for q in result.quotes["fig2_survival_by_category"]}
    for level in ("category", "label"):
        for i, row in enumerate(stats["tables"][f"summary_{level}"]):
            assert ("tables", f"summary_{level}", i, "median") in sources
    assert ("tests", "tau", "mean") in {q.source for q in result.quotes["fig5_rank_shift"]}
    # Figure 7 shows the stored mean per-chain rho of the best layer (not a pooled rho).
    best = stats["tests"]["attention_best_layer"]["answer"]
    assert f"ρ = {best['mean_rho']:.2f}" in " ".join(result.texts["fig7_attention"])


def test_load_returns_what_analyze_saved(tmp_path):
    run = synthetic_run(tmp_path / "run", n_chains=4, n_tokens=12, seed=1, keep_ratio=0.4)
    saved = analyze(run, n_boot=20, mixed=False)
    loaded = AnalysisResult.load(run)
    assert loaded.to_dict() == json.loads((run.stats_dir / "stats.json").read_text())
    assert loaded.counts_ == saved.counts_ and loaded.citations_ == saved.citations_
    assert set(loaded.tables_) == set(saved.tables_)
    for name, table in saved.tables_.items():
        pd.testing.assert_frame_equal(loaded.tables_[name], table.reset_index(drop=True), check_dtype=False,
                                      check_categorical=False)
    # Statistics of an earlier state of the run are never shown: refused without analysing (E150).
    from cotsurvival.reports.report import _stats

    assert _stats(run, run_analysis=False)[1] is None
    stats = json.loads((run.stats_dir / "stats.json").read_text())
    stats["counts"]["fingerprint"]["n_chains"] = 3
    (run.stats_dir / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(CotSurvivalError) as stale:
        _stats(run, run_analysis=False)
    assert stale.value.code == "E150" and "3 chains then, 4 now" in stale.value.one_line()
    with pytest.raises(CotSurvivalError) as info:
        AnalysisResult.load(synthetic_run(tmp_path / "bare", n_chains=2, n_tokens=6))
    assert info.value.code == "E012"
    (run.stats_dir / "stats.json").write_text("{not json")
    with pytest.raises(CotSurvivalError) as info:
        AnalysisResult.load(run)
    assert info.value.code == "E056"


def test_summary_shows_kaplan_meier_medians_not_reached_when_censored(tmp_path):
    """A run stopped at keep ratio 0.5: medians as lifelines' Kaplan–Meier gives them, 'not reached' when so."""
    from lifelines import KaplanMeierFitter

    run = synthetic_run(tmp_path / "run", n_chains=4, n_tokens=20, seed=2, keep_ratio=0.5)
    tokens = load_run(run)
    page = run_summary_html(run)  # no stats yet: computed by the analysis' own function
    not_reached = 0
    for category, group in tokens.groupby("category"):
        fitter = KaplanMeierFitter().fit(group["survival"], event_observed=~group["censored"])
        median = fitter.median_survival_time_
        name = re.escape(category.replace("_", " "))
        row = re.search(rf"{name}</td><td>([\d,]+)</td><td>(\d+)</td><td>([^<]*)</td>", page)
        assert row and int(row.group(1)) == len(group) and int(row.group(2)) == int((~group["censored"]).sum())
        if np.isinf(median):
            assert row.group(3) == "not reached"
            not_reached += 1
        else:
            assert float(row.group(3)) == pytest.approx(median, abs=5e-4)
    assert not_reached >= 1  # the case the old table got wrong (median of censored times)
    assert "not estimable (censored)" in page
    # After analyze, the same table quotes stats.json.
    analyze(run, n_boot=20, mixed=False)
    stored = run_summary_html(run)
    assert "from stats/stats.json" in stored and 'data-src="tables/summary_category/0/n_tokens"' in stored


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


# ----------------------------------------------------------------------------- degenerate runs
DEGENERATE = {
    # every chain has a single deletion step (3 tokens, keep ratio 0.67): the old TypeError in figure 6
    "one_step": {"n_chains": 3, "n_tokens": 3, "keep_ratio": 0.67},
    "one_chain": {"n_chains": 1, "n_tokens": 14},
    # nothing deleted (keep ratio 1): every token censored, no traces, no events
    "all_censored": {"n_chains": 3, "n_tokens": 10, "keep_ratio": 1.0},
}


@pytest.mark.parametrize("kind", sorted(DEGENERATE))
def test_degenerate_runs_give_a_full_report(tmp_path, kind):
    """Every figure is drawn or omitted with a note in the page; the report runs analyze itself."""
    run = synthetic_run(tmp_path / "run", seed=4, **DEGENERATE[kind])
    if kind == "one_step":
        assert all(run.read_part("steps", i)["step"].max() == 1 for i in run.part_indices("steps"))
    if kind == "all_censored":
        assert pd.read_parquet(run.table_dir("tokens"))["censored"].all()
    result = build_report(run, tmp_path / "out", widths=("one",))  # runs analyze (no stats yet)
    assert (run.stats_dir / "stats.json").is_file() and result.stats_note is None
    assert set(result.figures) | set(result.skipped) == set(ALL_STEMS)
    assert not set(result.figures) & set(result.skipped)
    page = result.index.read_text(encoding="utf-8")
    for stem, reason in result.skipped.items():
        assert reason and f"Figure omitted: {html.escape(reason)}" in page
    for stem in result.figures:
        assert (tmp_path / "out" / f"{stem}_one.png").is_file()
    if kind == "one_step":
        assert "fig6_objective" in result.figures
    if kind == "all_censored":
        assert "no pruning step" in result.skipped["fig6_objective"]
        assert "not reached" in page  # no category reached its median
    if kind == "one_chain":
        assert {"fig1_kaplan_meier", "fig2_survival_by_category", "fig6_objective"} <= set(result.figures)


def test_cox_terms_of_groups_without_deletions_have_no_p_value():
    """A group with no events: its hazard ratio and p are not shown, with a flag saying why."""
    from cotsurvival.reports.stored import table_html

    result = AnalysisResult(run=Path("r"), config={})
    result.tables_["summary_category"] = pd.DataFrame({"group": ["grammar", "symbolic_math"], "n_events": [12, 0]})
    result.tables_["cox_category"] = pd.DataFrame({
        "term": ["category[symbolic_math]", "rel_position"], "coef": [-30.1, 0.5], "p": [3e-213, 0.0421],
        "hr": [8.4e-14, 1.65], "n_tokens": [40, 40], "n_chains": [3, 3]})
    page = table_html("cox_category", result.tables_["cox_category"], result)
    rows = re.findall(r"<tr>(.*?)</tr>", page)
    assert "3e-213" not in page and "8.4e-14" not in page and "-30.1" not in page
    assert "no deletions in this group" in rows[1] and rows[1].count("<td>—</td>") == 3
    assert 'data-src="tables/cox_category/1/p">0.0421<' in rows[2]  # other terms keep their p


# ----------------------------------------------------------------------------- choosing chains
def test_parse_chain_selection(tmp_path):
    assert parse_chain_selection(None, None) is None
    assert parse_chain_selection(" b, a,b ,,c", None) == ["b", "a", "c"]
    ids = tmp_path / "ids.txt"
    ids.write_text("# chosen by hand\ngsm8k-test-1\n\n  gsm8k-test-7  # the long one\ngsm8k-test-1\n", encoding="utf-8")
    assert parse_chain_selection(None, str(ids)) == ["gsm8k-test-1", "gsm8k-test-7"]
    for chains, ids_file, code in (("a", str(ids), "E054"), (" , ", None, "E055"),
                                   (None, str(tmp_path / "missing.txt"), "E001")):
        with pytest.raises(CotSurvivalError) as info:
            parse_chain_selection(chains, ids_file)
        assert info.value.code == code
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(CotSurvivalError, match="E055"):
        parse_chain_selection(None, str(tmp_path / "empty.txt"))


def test_cli_report_chooses_chains_by_id_and_refuses_unknown_ones(tmp_path, capsys):
    run = synthetic_run(tmp_path / "run", n_chains=3, n_tokens=8)
    out = tmp_path / "out"
    for args, code in ((["--chain", "9"], "E051"), (["--chains", "syn-1,nope"], "E053"),
                       (["--chain", "1", "--chains", "syn-1"], "E054")):
        assert main(["report", str(run.path), "--out", str(out), "--no-analyze", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error[{code}]") and "\n" not in err and "Traceback" not in err
        assert not out.exists()  # refused before anything was written
    ids = tmp_path / "ids.txt"
    ids.write_text("syn-2\nsyn-0\n")
    assert main(["report", str(run.path), "--out", str(out), "--width", "one", "--no-analyze", "--ids", str(ids)]) == 0
    assert (out / "fig8_chain_2_one.png").is_file() and (out / "fig8_chain_0_one.png").is_file()
    page = (out / "index.html").read_text(encoding="utf-8")
    assert page.index('id="fig8_chain_2"') < page.index('id="fig8_chain_0"')  # in the order given


@pytest.mark.integration
def test_demo_report_quotes_stats_json(tmp_path, tiny_dir):
    """The demo (tiny model, real tagger): its index.html and a re-render's figures quote stats.json."""
    from cotsurvival.demo import run_demo

    paths = run_demo(tmp_path / "demo", limit=2, keep_ratio=0.5, model=str(tiny_dir), progress=False)
    stats = json.loads((paths["stats"] / "stats.json").read_text())
    sources = check_page_quotes_stats(paths["report"].read_text(encoding="utf-8"), stats)
    assert any(s.startswith("tables/summary_category/") for s in sources)
    again = build_report(paths["run"], tmp_path / "again", widths=("one",))
    check_figures_quote_stats(again, stats)
    assert again.quotes["fig2_survival_by_category"] or "fig2_survival_by_category" in again.skipped


def test_figure_medians_below_minimum_support_carry_no_interval(tmp_path):
    """Groups that analyze withholds for lack of support are drawn without an interval, and say so."""
    from cotsurvival.reports.data import ReportData
    from cotsurvival.reports.figures import _median_text

    run = synthetic_run(tmp_path / "run", n_chains=5, n_tokens=18, seed=3)
    analyze(run, n_boot=20, min_tokens=20, min_chains=5)
    data = ReportData(run)
    summary = data.stats.tables_["summary_category"]
    texts = {g: _median_text(data, "category", i) for i, g in enumerate(summary["group"])}
    small = summary["n_tokens"] < 20
    assert small.any() and (~small).any()  # the synthetic run has both kinds of group
    for i, group in enumerate(summary["group"]):
        if small.iloc[i]:
            assert "too few" in texts[group] and "[" not in texts[group]
            assert f"n = {int(summary['n_tokens'].iloc[i])}," in texts[group]
        elif pd.notna(summary["median"].iloc[i]):
            assert "too few" not in texts[group]


def test_primary_sensitivity_and_placement_reach_the_report_and_the_viewer(tmp_path):
    """stats.json["primary"]'s sensitivity block and placement diagnostic, as the analysis stored them,
    are on the report's headline and the viewer's run line (numbers formatted from stats.json)."""
    import html as html_lib

    from cotsurvival.reports import build_viewer

    run = synthetic_run(tmp_path / "run", n_chains=6, n_tokens=24, seed=4)
    analyze(run, n_boot=50, mixed=False)
    primary = json.loads((run.stats_dir / "stats.json").read_text())["primary"]
    assert {"cubic_final", "cubic_step", "cubic", "windows", "none"} <= set(primary["sensitivity"])
    page = html_lib.unescape(build_report(run, tmp_path / "out", widths=("one",)).index.read_text(encoding="utf-8"))
    assert "Sensitivity of the primary contrast" in page and "Placement:" in page
    for row in primary["sensitivity"].values():
        assert f"{row['estimate']:+.3f}" in page
    assert f"{primary['placement']['share_target_last_15pct']:.0%} in the last 15%" in page
    viewer = html_lib.unescape(build_viewer(run, tmp_path / "viewer.html").read_text(encoding="utf-8"))
    assert f"cubic_final {primary['sensitivity']['cubic_final']['estimate']:+.3f}" in viewer
    assert f"targets in first/last 15%: {primary['placement']['share_target_first_15pct']:.0%}/" in viewer


def test_viewer_never_quotes_a_stale_primary(tmp_path):
    """A stats.json whose fingerprint no longer matches the run: the viewer shows no primary number,
    only why and the command that updates it (as the report and the notebook do)."""
    import html as html_lib

    from cotsurvival.reports import build_viewer

    run = synthetic_run(tmp_path / "run", n_chains=6, n_tokens=24, seed=4)
    analyze(run, n_boot=50, mixed=False)
    path = run.stats_dir / "stats.json"
    stats = json.loads(path.read_text())
    estimate = f"{stats['primary']['estimate']:+.3f}"
    fresh = html_lib.unescape(build_viewer(run, tmp_path / "fresh.html").read_text(encoding="utf-8"))
    assert f": {estimate} (" in fresh and "is stale" not in fresh
    stats["counts"]["fingerprint"]["chains"] = "another set of chains"
    path.write_text(json.dumps(stats))
    stale = html_lib.unescape(build_viewer(run, tmp_path / "stale.html").read_text(encoding="utf-8"))
    assert f": {estimate} (" not in stale
    assert "primary result not shown: stats/stats.json is stale (its chains changed)" in stale
    assert "run `cotsurvival analyze`" in stale
