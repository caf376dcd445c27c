"""The LLM judge: a chat model labels each reasoning token (the published study's method).

For every chain of a run the judge sees the taxonomy (labels, descriptions, hard-case decisions),
the question, the reasoning, the answer and the numbered list of the run's non-whitespace tokens,
and must answer with JSON: one ``{"i", "label", "why"}`` per token. The answer is validated (every
token exactly once, labels from the spec); on errors the judge is re-asked, with the errors
listed, a bounded number of times. Tokens it still leaves unlabelled take the rule tagger's label
and are flagged (``judge_fallback``). Whitespace-only tokens are FUNCTION by definition and are
not asked about.

The judge is either a local Hugging Face chat model (greedy decoding) or an OpenAI-compatible
HTTP endpoint (``POST {url}/chat/completions``).
"""
from __future__ import annotations

import json
import math
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import pandas as pd

from ..errors import CotSurvivalError
from ..labels import RULE, already_labelled, judge_source, read_labels, record_source, write_labels
from ..models import load_model
from ..progress import progress_bar
from ..results import StageResult
from ..rundir import RunDir, as_rundir, atomic_write_bytes
from .agreement import cohen_kappa  # noqa: F401  (also importable from here, as in 0.1.0)
from .spec import LEVELS, TaxonomySpec, load_spec

PROMPT_VERSION = "judge-v1"
JUDGE_COLUMNS = ("judge_label", "judge_category", "judge_fallback", "judge_reason")


class ChatClient(Protocol):
    """Anything that answers a list of chat messages with text."""

    name: str

    def complete(self, messages: list[dict]) -> str:  # pragma: no cover - protocol
        ...


class HTTPChatClient:
    """An OpenAI-compatible ``/v1/chat/completions`` endpoint (temperature 0).

    Parameters
    ----------
    url : str
        Base URL (``http://host:port/v1``) or the full ``.../chat/completions`` URL.
    model : str
        Model name sent in the request.
    timeout : float
        Seconds per request.
    api_key : str, optional
        Bearer token; defaults to the ``COTSURVIVAL_JUDGE_API_KEY`` environment variable if set.
    """

    def __init__(self, url: str, model: str, timeout: float = 120.0, api_key: str | None = None) -> None:
        url = url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        if not self.url.startswith(("http://", "https://")):
            raise CotSurvivalError("E091", url=url)
        self.name = model
        self.timeout = timeout
        self.api_key = api_key if api_key is not None else os.environ.get("COTSURVIVAL_JUDGE_API_KEY")

    def complete(self, messages: list[dict]) -> str:
        body = json.dumps({"model": self.name, "messages": messages, "temperature": 0}).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            raise CotSurvivalError("E021", judge=self.url, reason=f"HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise CotSurvivalError("E021", judge=self.url, reason=f"cannot connect ({getattr(exc, 'reason', exc)})") from None
        except json.JSONDecodeError:
            raise CotSurvivalError("E021", judge=self.url, reason="the endpoint did not return JSON") from None
        try:
            return str(payload["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError):
            raise CotSurvivalError("E021", judge=self.url, reason="no choices[0].message.content in the response") from None


class LocalChatClient:
    """A local chat model loaded with :func:`cotsurvival.models.load_model`, decoding greedily."""

    def __init__(self, spec: str, device: str = "auto", max_new_tokens: int = 4096) -> None:
        model, tokenizer, _ = load_model(spec, device=device)
        self._setup(model, tokenizer, spec, max_new_tokens)

    @classmethod
    def from_loaded(cls, model, tokenizer, name: str = "local", max_new_tokens: int = 4096) -> "LocalChatClient":
        """Wrap a model and tokenizer already in memory."""
        client = cls.__new__(cls)
        client._setup(model, tokenizer, name, max_new_tokens)
        return client

    def _setup(self, model, tokenizer, name: str, max_new_tokens: int) -> None:
        self.model, self.tokenizer, self.name, self.max_new_tokens = model, tokenizer, name, max_new_tokens
        if not getattr(tokenizer, "chat_template", None):
            raise CotSurvivalError("E021", judge=name, reason="the model has no chat template; use a chat/instruct model")

    def complete(self, messages: list[dict]) -> str:
        import torch

        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        if not isinstance(ids, torch.Tensor):  # newer transformers return a BatchEncoding
            ids = ids["input_ids"]
        ids = ids.to(self.model.device)
        with torch.no_grad():
            output = self.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                         max_new_tokens=self.max_new_tokens,
                                         pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        return self.tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True)


# ------------------------------------------------------------------------------------ prompting
def build_messages(question: str, reasoning: str, answer: str, tokens: Sequence[tuple[int, str]],
                   spec: TaxonomySpec) -> list[dict]:
    """The chat messages asking for one label per numbered token."""
    label_lines = "\n".join(
        f"- {label} ({spec.short(label)}): {_description(spec, label)}" for label in spec.overlap_order)
    decisions = "\n".join(f"- {d}" for d in spec.decisions)
    system = (
        "You annotate the tokens of a chain-of-thought solution to a math word problem with word categories.\n"
        f"Labels (when several fit, the first in this order wins):\n{label_lines}\n"
        f"Decisions for hard cases:\n{decisions}\n"
        "A token that is part of a word takes the label of that word. Answer with JSON only, no prose: "
        '{"labels": [{"i": <token number>, "label": "<LABEL>", "why": "<at most 8 words>"}, ...]} '
        "with every token number exactly once."
    )
    listing = "\n".join(f"{i}\t{json.dumps(text, ensure_ascii=False)}" for i, text in tokens)
    user = (f"Question:\n{question}\n\nReasoning:\n{reasoning}\n\nAnswer:\n{answer}\n\n"
            f"Tokens of the reasoning (number, then the token text as JSON):\n{listing}")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _description(spec: TaxonomySpec, label: str) -> str:
    return spec.label_descriptions.get(label, "")


def parse_judge_reply(reply: str, expected: Sequence[int], spec: TaxonomySpec) -> tuple[dict, list[str]]:
    """Validate a judge reply.

    Returns
    -------
    labels : dict
        Token number -> (label, why) for the valid entries.
    errors : list of str
        What is wrong (empty when every expected token got exactly one valid label).
    """
    errors: list[str] = []
    data = _extract_json(reply)
    if data is None:
        return {}, ["the reply is not JSON of the form {\"labels\": [...]}"]
    entries = data.get("labels") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        return {}, ["'labels' must be a list"]
    by_short = {spec.short(label).lower(): label for label in spec.labels}
    expected_set = set(expected)
    labels: dict[int, tuple[str, str]] = {}
    seen: set[int] = set()
    for entry in entries:
        if not isinstance(entry, dict) or "i" not in entry or "label" not in entry:
            errors.append(f"entry {str(entry)[:60]!r} lacks 'i' or 'label'")
            continue
        try:
            index = int(entry["i"])
        except (TypeError, ValueError):
            errors.append(f"token number {entry['i']!r} is not an integer")
            continue
        raw = str(entry["label"]).strip()
        label = raw.upper() if raw.upper() in spec.labels else by_short.get(raw.lower())
        if index not in expected_set:
            errors.append(f"token {index} does not exist")
        elif index in seen:
            errors.append(f"token {index} is labelled more than once")
            labels.pop(index, None)
        elif label is None:
            errors.append(f"token {index}: unknown label {raw!r}")
        else:
            labels[index] = (label, str(entry.get("why", ""))[:200])
        seen.add(index)
    missing = [i for i in expected if i not in seen]
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        errors.append(f"{len(missing)} tokens have no label: {shown}")
    return labels, errors


def _extract_json(reply: str):
    text = reply.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, flags=re.DOTALL)
    if fenced:
        text = fenced.group(1)
    for candidate in (text, text[text.find("{"):text.rfind("}") + 1] if "{" in text else ""):
        if not candidate:
            continue
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    return None


@dataclass
class ChainJudgement:
    """Judge labels of one chain, token number -> (label, why), and the tokens that fell back."""

    labels: dict
    fallback: list
    attempts: int
    errors: list = field(default_factory=list)


def judge_chain(client: ChatClient, question: str, reasoning: str, answer: str, tokens: Sequence[tuple[int, str]],
                spec: TaxonomySpec, retries: int = 2) -> ChainJudgement:
    """Ask ``client`` for labels of ``tokens``, re-asking up to ``retries`` times on invalid output."""
    expected = [i for i, _ in tokens]
    messages = build_messages(question, reasoning, answer, tokens, spec)
    best: dict = {}
    errors: list[str] = []
    attempts = 0
    for attempts in range(1, retries + 2):
        reply = client.complete(messages)
        labels, errors = parse_judge_reply(reply, expected, spec)
        if len(labels) >= len(best):
            best = labels
        if not errors:
            break
        messages = messages + [
            {"role": "assistant", "content": reply},
            {"role": "user", "content": "Your answer has errors:\n- " + "\n- ".join(errors[:30]) +
             "\nAnswer again with the complete JSON for every token."},
        ]
    fallback = [i for i in expected if i not in best]
    return ChainJudgement(best, fallback, attempts, errors)


def make_client(judge: str, url: str | None = None, device: str = "auto") -> ChatClient:
    """An HTTP client when ``url`` is given, otherwise a local chat model."""
    return HTTPChatClient(url, judge) if url else LocalChatClient(judge, device=device)


@dataclass
class JudgeResult(StageResult):
    """What ``judge_run`` did: chains and tokens labelled, tokens that fell back to the rule label."""

    title = "cotsurvival tag --judge"
    target: str = ""
    source: str = ""
    n_chains: int = 0
    n_tokens: int = 0
    n_fallback: int = 0
    n_skipped: int = 0
    seconds: float = 0.0


def judge_run(
    run,
    judge: str | ChatClient,
    url: str | None = None,
    spec: TaxonomySpec | None = None,
    retries: int = 2,
    device: str = "auto",
    progress: bool | Callable[[int], None] = False,
    *,
    overwrite: bool = False,
) -> JudgeResult:
    """Label a run's tokens with an LLM judge: the source ``judge:<model>`` of labels.parquet.

    Chains that already have this judge's labels are skipped (a re-run resumes, no request is
    repeated) unless ``overwrite``; labels from another taxonomy version are refused (E017) unless
    ``overwrite``. Tokens the judge leaves unlabelled take the rule label, flagged ``judge_fallback``.

    Parameters
    ----------
    run : path or RunDir
        A run already tagged by the rule tagger (its labels are the fallback).
    judge : str or ChatClient
        Model spec (local) or model name at ``url``; or a ready client.
    url : str, optional
        OpenAI-compatible endpoint.
    retries : int
        Re-asks per chain after invalid output.
    progress : bool
        Show a progress bar (a callable is also accepted and called with 1 per chain).

    Returns
    -------
    JudgeResult
        ``source`` is ``judge:<model>``; ``result["n_fallback"]`` etc. also work.
    """

    run = as_rundir(run)
    spec = spec or load_spec()
    if retries < 0:
        raise CotSurvivalError("E086", option="retries", rule=">= 0", value=retries)
    client = judge if not isinstance(judge, str) else make_client(judge, url, device)
    name = getattr(client, "name", str(judge))
    source = judge_source(name)
    chains = run.read_chains().set_index("chain_index")
    n_tokens = n_fallback = 0
    indices = run.part_indices("tokens")
    done = set() if overwrite else already_labelled(run, source, spec.manifest_entry(), "judge labels")
    todo = [i for i in indices if i not in done]
    entry = {"model": name, "url": url, "prompt": PROMPT_VERSION, "retries": retries, "taxonomy": spec.manifest_entry()}
    record_source(run, source, complete=False, kind="LLM judge", **entry)
    started = time.perf_counter()
    with progress_bar(progress, len(todo), "judge") as bar:
        for index in todo:
            tokens = run.read_part("tokens", index, columns=["chain_index", "chain_id", "position", "text",
                                                             "is_whitespace"])
            rule = read_labels(run, RULE, [index])
            if len(rule) != len(tokens):
                raise CotSurvivalError("E012", path=run.path, what="rule labels", command=f"cotsurvival tag {run.path}")
            tokens = tokens.merge(rule[["position", "label"]], on="position", how="left", validate="1:1")
            row = chains.loc[index]
            asked = [(int(p), str(t)) for p, t, w in zip(tokens["position"], tokens["text"], _whitespace(tokens))
                     if not w]
            result = judge_chain(client, str(row["question"]), str(row["reasoning"]), str(row["answer"]), asked, spec,
                                 retries=retries)
            labels, reasons, flags = [], [], []
            for position, rule_label, is_space in zip(tokens["position"], tokens["label"], _whitespace(tokens)):
                position = int(position)
                if is_space:
                    labels.append(spec.whitespace_label), reasons.append("whitespace"), flags.append(False)
                elif position in result.labels:
                    label, why = result.labels[position]
                    labels.append(label), reasons.append(why), flags.append(False)
                else:
                    labels.append(rule_label), reasons.append("fallback: rule label"), flags.append(True)
            rows = tokens[["chain_index", "chain_id", "position"]].copy()
            rows["label"] = labels
            rows["category"] = [spec.category(label) for label in labels]
            rows["judge_fallback"] = flags
            rows["judge_reason"] = reasons
            write_labels(run, index, rows, source, spec.manifest_entry())
            n_tokens += len(tokens)
            n_fallback += sum(flags)
            bar.update(1)
    stored = read_labels(run, source, extra=True)  # all chains of this source, also those of earlier runs
    entry = {"model": name, "url": url, "prompt": PROMPT_VERSION, "retries": retries,
             "n_fallback": int(stored["judge_fallback"].fillna(False).sum()), "taxonomy": spec.manifest_entry()}
    run.update_manifest(judge=entry)  # 0.1.0 key, kept for readers of older manifests
    record_source(run, source, kind="LLM judge", **entry)
    return JudgeResult(target=str(run.path), source=source, n_chains=len(todo), n_tokens=n_tokens,
                       n_fallback=n_fallback, n_skipped=len(done), seconds=time.perf_counter() - started)


def _whitespace(tokens: pd.DataFrame) -> list[bool]:
    if "is_whitespace" in tokens.columns:
        return [bool(w) for w in tokens["is_whitespace"]]
    return [not str(t).strip() for t in tokens["text"]]


# ------------------------------------------------------------------------------------ agreement
@dataclass
class Agreement:
    """Agreement between judge and rule labels of a run."""

    level: str
    n: int
    accuracy: float
    kappa: float
    confusion: pd.DataFrame  # rows judge, columns rule

    def to_text(self) -> str:
        return (f"judge vs rule ({self.level}, {self.n} tokens): accuracy {self.accuracy:.3f}, "
                f"Cohen's kappa {self.kappa:.3f}\n\nconfusion (rows judge, columns rule):\n{self.confusion.to_string()}")

    def to_json(self, path) -> None:
        kappa = None if math.isnan(self.kappa) else self.kappa  # undefined (one label only): JSON null
        data = {"level": self.level, "n": self.n, "accuracy": self.accuracy, "kappa": kappa,
                "confusion": {str(r): {str(c): int(v) for c, v in row.items()} for r, row in self.confusion.iterrows()}}
        atomic_write_bytes(Path(path), json.dumps(data, indent=2).encode("utf-8"))


def judge_agreement(run, level: str = "label", spec: TaxonomySpec | None = None, judge: str = "judge") -> Agreement:
    """Cohen's kappa and confusion between the judge's labels and the rule labels (or their categories).

    ``judge`` names the judge source (``"judge"``: the only one; or ``"judge:MODEL"``).
    """
    from ..labels import RULE, read_labels, resolve_source

    run = as_rundir(run)
    spec = spec or load_spec()
    LEVELS.check(level)
    try:
        source = resolve_source(run, judge)
    except CotSurvivalError as exc:
        if exc.code == "E015":
            raise CotSurvivalError("E022", path=run.path) from None
        raise
    keys = ["chain_index", "position"]
    judged = read_labels(run, source)[keys + [level]]
    rule = read_labels(run, RULE)[keys + [level]]
    frame = judged.merge(rule, on=keys, how="inner", suffixes=("_judge", "_rule"), validate="1:1")
    judge_column, rule_column = f"{level}_judge", f"{level}_rule"
    names = list(spec.overlap_order) if level == "label" else list(spec.categories)
    kappa, table = cohen_kappa(frame[judge_column].astype(str), frame[rule_column].astype(str), names)
    table.index = [spec.short(n) if level == "label" else n for n in table.index]
    table.columns = [spec.short(n) if level == "label" else n for n in table.columns]
    accuracy = float((frame[judge_column] == frame[rule_column]).mean())
    return Agreement(level, len(frame), accuracy, kappa, table)
