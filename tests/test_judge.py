"""The LLM judge: reply validation, re-asking, fallback, the HTTP client, and judge/rule agreement."""
from __future__ import annotations

import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pandas as pd
import pytest

from cotsurvival.errors import CotSurvivalError
from cotsurvival.taxonomy import load_spec
from cotsurvival.taxonomy.judge import (
    HTTPChatClient, cohen_kappa, judge_agreement, judge_chain, judge_run, parse_judge_reply,
)


# ------------------------------------------------------------------------------------- parsing
def test_parse_valid_reply_accepts_short_names_and_fences():
    spec = load_spec()
    reply = '```json\n{"labels": [{"i": 0, "label": "SymbMath", "why": "a number"}, {"i": 2, "label": "FUNCTION"}]}\n```'
    labels, errors = parse_judge_reply(reply, [0, 2], spec)
    assert errors == []
    assert labels == {0: ("SYMBOLIC_MATH", "a number"), 2: ("FUNCTION", "")}


@pytest.mark.parametrize("reply, needle", [
    ("not json at all", "not JSON"),
    ('{"labels": [{"i": 0, "label": "FUNCTION"}]}', "1 tokens have no label: 1"),
    ('{"labels": [{"i": 0, "label": "FUNCTION"}, {"i": 0, "label": "CONTENT"}, {"i": 1, "label": "CONTENT"}]}',
     "more than once"),
    ('{"labels": [{"i": 0, "label": "NOUN"}, {"i": 1, "label": "CONTENT"}]}', "unknown label 'NOUN'"),
    ('{"labels": [{"i": 0, "label": "CONTENT"}, {"i": 1, "label": "CONTENT"}, {"i": 7, "label": "CONTENT"}]}',
     "token 7 does not exist"),
])
def test_parse_invalid_replies(reply, needle):
    labels, errors = parse_judge_reply(reply, [0, 1], load_spec())
    assert any(needle in e for e in errors), errors
    assert 0 not in labels or "more than once" not in needle  # a duplicated token is not trusted


class Scripted:
    """A chat client that answers from a list and records the conversations it saw."""

    name = "scripted"

    def __init__(self, replies):
        self.replies = list(replies)
        self.seen = []

    def complete(self, messages):
        self.seen.append(messages)
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


def test_judge_chain_reasks_then_falls_back():
    spec = load_spec()
    tokens = [(0, "So"), (1, " 5")]
    bad = '{"labels": [{"i": 0, "label": "META_DISCOURSE"}]}'
    good = '{"labels": [{"i": 0, "label": "META_DISCOURSE"}, {"i": 1, "label": "SYMBOLIC_MATH"}]}'
    client = Scripted([bad, good])
    result = judge_chain(client, "Q?", "So 5", "#### 5", tokens, spec, retries=2)
    assert result.attempts == 2 and result.fallback == [] and result.labels[1][0] == "SYMBOLIC_MATH"
    assert "1 tokens have no label: 1" in client.seen[1][-1]["content"]  # the re-ask names the error

    stubborn = Scripted([bad])
    result = judge_chain(stubborn, "Q?", "So 5", "#### 5", tokens, spec, retries=1)
    assert result.attempts == 2 and result.fallback == [1] and result.labels == {0: ("META_DISCOURSE", "")}


# ------------------------------------------------------------------------------------ kappa
def test_cohen_kappa_hand_worked_example():
    # 2x2 table judge x rule = [[20, 5], [10, 15]]: p_o = 35/50 = 0.7,
    # p_e = (25*30 + 25*20) / 50**2 = 0.5, kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
    judge = ["A"] * 25 + ["B"] * 25
    rule = ["A"] * 20 + ["B"] * 5 + ["A"] * 10 + ["B"] * 15
    kappa, table = cohen_kappa(judge, rule, ["A", "B"])
    assert kappa == pytest.approx(0.4)
    assert table.to_numpy().tolist() == [[20, 5], [10, 15]]
    assert math.isnan(cohen_kappa(["A", "A"], ["A", "A"])[0])  # one label only: p_e = 1, kappa is 0/0


def test_tag_eval_and_tag_agree_agree_on_degenerate_data():
    """One kappa: the tagger-vs-gold scores and the judge-vs-rule agreement give the same number on the same table."""
    from cotsurvival.taxonomy.evaluate import Scores

    cases = [(["A"] * 4, ["A"] * 4), (["A"] * 4, ["B"] * 4), (["A", "A", "B"], ["A", "A", "A"]),
             (["A"] * 25 + ["B"] * 25, ["A"] * 20 + ["B"] * 5 + ["A"] * 10 + ["B"] * 15)]
    for first, second in cases:
        kappa, table = cohen_kappa(first, second, ["A", "B"])
        via_eval = Scores("fine", "count", table).kappa
        assert (math.isnan(kappa) and math.isnan(via_eval)) or kappa == pytest.approx(via_eval), (first, second)
    # hand-worked: A,A,B vs A,A,A -> p_o = 2/3, p_e = (2*3 + 1*0)/9 = 2/3 -> kappa = 0
    assert cohen_kappa(["A", "A", "B"], ["A", "A", "A"], ["A", "B"])[0] == pytest.approx(0.0)


# ------------------------------------------------------------------------------- HTTP server
class _Handler(BaseHTTPRequestHandler):
    script: list = []
    requests: list = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        mode = type(self).script.pop(0) if len(type(self).script) > 1 else type(self).script[0]
        if mode == "error":
            self.send_response(500)
            self.end_headers()
            return
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        listing = re.findall(r"^(\d+)\t(.*)$", user, flags=re.MULTILINE)
        entries = [{"i": int(i), "label": "SYMBOLIC_MATH" if any(c.isdigit() for c in json.loads(t)) else "CONTENT",
                    "why": "canned"} for i, t in listing]
        if mode == "invalid":
            entries = entries[:-1]
        content = json.dumps({"labels": entries})
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Handler.requests = []
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def tagged_run(tmp_path):
    from cotsurvival.taxonomy import tag_run
    from cotsurvival.testing import synthetic_run

    run = synthetic_run(tmp_path / "run", n_chains=2, n_tokens=12, tagged=False, baselines=False)
    tag_run(run)
    return run


def _judged_tokens(run, model="canned-model"):
    """tokens.parquet joined with the rule labels and the judge's labels (as judge_* columns) from labels.parquet."""
    from cotsurvival.labels import read_labels

    keys = ["chain_index", "position"]
    rule = read_labels(run, "rule")[keys + ["label", "category"]]
    judge = read_labels(run, f"judge:{model}", extra=True)[keys + ["label", "category", "judge_fallback", "judge_reason"]]
    judge = judge.rename(columns={"label": "judge_label", "category": "judge_category"})
    tokens = run.read_table("tokens")
    assert "label" not in tokens.columns and "judge_label" not in tokens.columns  # tokens stays pruning's
    return tokens.merge(rule, on=keys, validate="1:1").merge(judge, on=keys, validate="1:1")


def test_judge_over_http_reasks_and_stores_labels(server, tagged_run):
    _, url = server
    _Handler.script = ["invalid", "valid"]
    result = judge_run(tagged_run, "canned-model", url=url, retries=2)
    assert result["n_fallback"] == 0
    assert len(_Handler.requests) == 3  # chain 0: invalid then valid; chain 1: valid
    assert _Handler.requests[0]["model"] == "canned-model" and _Handler.requests[0]["temperature"] == 0
    assert "have no label" in _Handler.requests[1]["messages"][-1]["content"]
    tokens = _judged_tokens(tagged_run)
    expected = ["SYMBOLIC_MATH" if any(c.isdigit() for c in t) else "CONTENT" for t in tokens["text"]]
    assert tokens["judge_label"].tolist() == expected
    assert {"label", "category", "judge_category", "judge_fallback", "judge_reason"} <= set(tokens.columns)
    manifest = tagged_run.read_manifest()
    assert manifest["judge"]["model"] == "canned-model"
    assert manifest["labels"]["judge:canned-model"]["n_chains"] == 2 and manifest["labels"]["rule"]["n_chains"] == 2

    # tag-agree: kappa against an independent computation from the stored columns
    agreement = judge_agreement(tagged_run)
    table = pd.crosstab(tokens["judge_label"], tokens["label"])
    n = table.to_numpy().sum()
    observed = sum(table.loc[k, k] for k in table.index if k in table.columns) / n
    chance = sum(table.loc[k].sum() * table[k].sum() for k in table.index if k in table.columns) / n ** 2
    assert agreement.kappa == pytest.approx((observed - chance) / (1 - chance))
    assert agreement.accuracy == pytest.approx(observed)
    assert agreement.confusion.to_numpy().sum() == len(tokens)


def test_judge_that_never_fixes_its_output_falls_back(server, tagged_run):
    _, url = server
    _Handler.script = ["invalid"]
    result = judge_run(tagged_run, "canned-model", url=url, retries=1)
    assert len(_Handler.requests) == 4  # two chains, one re-ask each
    tokens = _judged_tokens(tagged_run)
    assert result["n_fallback"] == 2 == int(tokens["judge_fallback"].sum())
    flagged = tokens[tokens["judge_fallback"]]
    assert (flagged["judge_label"] == flagged["label"]).all()


def test_http_errors_are_one_line(server):
    _, url = server
    _Handler.script = ["error"]
    with pytest.raises(CotSurvivalError) as info:
        HTTPChatClient(url, "m").complete([{"role": "user", "content": "hi"}])
    assert info.value.code == "E021" and "HTTP 500" in info.value.message
    with pytest.raises(CotSurvivalError) as info:
        HTTPChatClient("http://127.0.0.1:9/v1", "m", timeout=2).complete([])
    assert info.value.code == "E021"
    with pytest.raises(CotSurvivalError):
        HTTPChatClient("file:///etc/passwd", "m")


def test_cli_judge_and_agree(server, tagged_run, tmp_path):
    from click.testing import CliRunner

    from cotsurvival.cli import cli, main

    _, url = server
    _Handler.script = ["valid"]
    assert main(["tag-agree", str(tagged_run.path)]) == 2  # no judge labels yet (E022)
    result = CliRunner().invoke(cli, ["tag", str(tagged_run.path), "--judge", "canned", "--judge-url", url])
    assert result.exit_code == 0, result.output
    out = tmp_path / "agree.json"
    result = CliRunner().invoke(cli, ["tag-agree", str(tagged_run.path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Cohen's kappa" in result.output
    data = json.loads(out.read_text())
    assert data["n"] == len(tagged_run.read_table("tokens"))
    n_requests = len(_Handler.requests)
    result = CliRunner().invoke(cli, ["tag", str(tagged_run.path), "--judge", "canned", "--judge-url", url])
    assert result.exit_code == 0, result.output
    assert len(_Handler.requests) == n_requests  # a re-run resumes: every chain already has this judge's labels


def test_local_chat_model_path_falls_back_on_garbage(tagged_run):
    """A random-weight tiny Llama cannot produce JSON: every asked token falls back and is flagged."""
    from cotsurvival.taxonomy.judge import LocalChatClient
    from cotsurvival.testing import tiny_llama

    model, tokenizer = tiny_llama()
    client = LocalChatClient.from_loaded(model, tokenizer, "tiny", max_new_tokens=8)
    result = judge_run(tagged_run, client, retries=1)
    tokens = _judged_tokens(tagged_run, "tiny")
    asked = ~tokens["is_whitespace"].astype(bool)
    assert result["n_fallback"] == int(asked.sum()) == int(tokens["judge_fallback"].sum())
    assert (tokens["judge_label"] == tokens["label"]).all()
    assert tagged_run.read_manifest()["judge"]["model"] == "tiny"
