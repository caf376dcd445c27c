"""The viewer and the report page in headless Chromium (Debian's), driven by Playwright.

Skipped only when no chromium binary is installed (.ci/run installs it).
"""
from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest

from cotsurvival.reports import build_report, build_viewer
from cotsurvival.testing import synthetic_run
from test_viewer import EVIL, make_evil_run

CHROMIUM = os.environ.get("COTSURVIVAL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = os.environ.get("COTSURVIVAL_SCREENSHOTS", "/tmp")

pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"),
              pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the `test` extra) is not installed")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1100, "height": 700})
    page.problems, page.dialogs = [], []
    page.on("console", lambda m: page.problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: page.problems.append(f"request {r.url}") if not r.url.startswith(("file:", "data:")) else None)
    yield page
    page.close()


def set_step(page, step: int) -> None:
    page.eval_on_selector("#step", "(e, s) => { e.value = String(s); e.dispatchEvent(new Event('input')); }", step)


def visible_tokens(page) -> int:
    return page.eval_on_selector_all("#text .tok", "els => els.filter(e => e.getClientRects().length > 0).length")


def test_slider_shows_exactly_the_kept_tokens(page, tmp_path):
    run = synthetic_run(tmp_path / "run", n_chains=3, n_tokens=16, keep_ratio=0.2, seed=5)
    page.goto(build_viewer(run, tmp_path / "v.html").as_uri())
    for chain_index in (0, 2):
        page.select_option("#chain", str(chain_index))
        tokens = run.read_part("tokens", chain_index)
        baselines = run.read_part("baselines", chain_index)
        n, steps = len(tokens), int(run.read_part("steps", chain_index)["step"].max())
        assert page.eval_on_selector("#step", "e => Number(e.max)") == steps
        for ordering in ("greedy", "random", "loo"):
            page.select_option("#ordering", ordering)
            deleted = tokens["deleted_step"] if ordering == "greedy" else \
                baselines[baselines["ordering"] == ordering]["deleted_step"]
            for step in sorted({0, 1, steps // 2, steps}):
                set_step(page, step)
                expected = int((deleted.isna() | (deleted > step)).sum())
                assert expected == n - step  # the run's contract ...
                assert visible_tokens(page) == expected  # ... and what the page shows
                assert f"visible tokens: {expected} of {n}" in page.text_content("#status")
    # Hover text: token, label, deletion step, and the cost at the current step from traces.
    page.select_option("#chain", "0")
    page.select_option("#ordering", "greedy")
    set_step(page, 1)
    traces = run.read_part("traces", 0)
    labels = run.read_part("labels", 0)
    tokens = run.read_part("tokens", 0).merge(labels[labels["source"] == "rule"][["position", "label"]], on="position")
    tokens = tokens.sort_values("position")
    alive = tokens[tokens["deleted_step"].isna() | (tokens["deleted_step"] > 1)].iloc[0]
    cost = float(traces[(traces["step"] == 2) & (traces["position"] == alive["position"])]["cost"].iloc[0])
    title = page.get_attribute(f'#text .tok[data-position="{int(alive["position"])}"]', "title")
    assert alive["label"] in title and f"deleted at step {int(alive['deleted_step'])}" in title
    assert f"cost at step 2: {cost:.3f}" in title
    page.check("#strike")  # struck-through mode shows every token again, marked
    assert visible_tokens(page) == len(tokens)
    page.screenshot(path=os.path.join(SHOTS, "cotsurvival-viewer.png"), full_page=True)
    assert page.problems == [] and page.dialogs == []


def test_markup_in_chains_stays_text(page, tmp_path):
    run = make_evil_run(tmp_path / "run")
    page.goto(build_viewer(run, tmp_path / "v.html").as_uri())
    page.wait_for_timeout(200)
    assert page.dialogs == [] and page.problems == []
    assert page.eval_on_selector_all("#text script, #text img, #text i, #question b, main script, main img",
                                     "els => els.length") == 0
    text = page.text_content("#text")
    for evil in EVIL:
        assert evil in text
    assert page.text_content("#question") == run.read_chains().loc[0, "question"]
    assert page.eval_on_selector("#chain option", "o => o.textContent").startswith("<i>evil</i>")


def test_report_page_loads_offline(page, tmp_path):
    run = synthetic_run(tmp_path / "run", n_chains=4, n_tokens=14)
    result = build_report(run, tmp_path / "out", widths=("two",), run_analysis=False)
    page.goto(result.index.as_uri())
    loaded = page.eval_on_selector_all("img", "els => els.map(e => e.complete && e.naturalWidth)")
    assert loaded and all(width == 2070 for width in loaded)
    page.screenshot(path=os.path.join(SHOTS, "cotsurvival-report.png"), full_page=False)
    assert page.problems == [] and page.dialogs == []
