"""Attention features of reasoning tokens, and how well they predict survival.

:func:`compute_attention_features` runs one forward pass per chain on the unpruned sequence
``prefix_ids + reasoning_ids + answer_ids`` with ``output_attentions=True`` and writes
``attention.parquet``. For reasoning token ``i`` (absolute index ``j = P + i``, ``P`` = prefix
length, ``R`` reasoning tokens, ``A`` answer tokens) and layer ``L``, with ``a[q, k]`` the
attention weight from query ``q`` to key ``k`` averaged over heads:

* ``attn_answer_LXX = sum_{q in answer} a[q, j] / A``: mean attention the token receives from
  answer tokens;
* ``attn_later_LXX = sum_{j < q < P + R} a[q, j] / (R - 1 - i)``: mean attention it receives
  from the reasoning tokens after it (0 for the last reasoning token, which has none);
* ``surprisal = -log p(token_j | tokens before j)`` in nats (missing only when the chain has no
  prefix, so the first token has no context).

:func:`attention_predictors` then asks how well each feature ranks tokens by survival.
"""
from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import CotSurvivalError
from ..rundir import RunDir
from .data import as_rundir, attention_layers
from .inference import mean_ci
from .inference import _flip_patterns


# --------------------------------------------------------------------------- features
def compute_attention_features(
    run: str | os.PathLike | RunDir,
    model=None,
    *,
    device: str = "auto",
    dtype: str = "auto",
    overwrite: bool = False,
    progress: bool = False,
) -> int:
    """Write ``attention.parquet``: attention received and surprisal per reasoning token and layer.

    Parameters
    ----------
    run : str, PathLike or RunDir
    model : str or transformers model, optional
        A model spec for :func:`cotsurvival.models.load_model` (default: the run's model,
        ``manifest["model"]["spec"]``) or an already loaded causal LM (switched to eager
        attention). It must be the model that made the run: only token ids are used.
    device, dtype : str
        As in :func:`~cotsurvival.models.load_model` (ignored for a loaded model).
    overwrite : bool, default False
        Recompute chains that already have a part; by default they are skipped (resumable).

    Returns
    -------
    int
        Number of chains written.
    """
    import torch

    run = as_rundir(run)
    manifest = run.read_manifest()
    model, spec = _resolve_model(model, manifest, device, dtype)
    chains = run.read_chains()
    vocab = model.get_input_embeddings().num_embeddings
    written, started = 0, time.perf_counter()
    rows = chains.itertuples(index=False)
    if progress:
        from ..progress import make_bar

        rows = make_bar(rows, total=len(chains), desc="attention", unit="chain")
    for chain in rows:
        index = int(chain.chain_index)
        if run.has_part("attention", index) and not overwrite:
            continue
        prefix, reasoning, answer = (list(map(int, x)) for x in (chain.prefix_ids, chain.reasoning_ids, chain.answer_ids))
        ids = prefix + reasoning + answer
        if ids and max(ids) >= vocab:
            raise CotSurvivalError("E041", reason=f"chain {chain.chain_id} has token id {max(ids)} outside the model's "
                                   f"vocabulary ({vocab}); use the model that made the run")
        with torch.no_grad():
            features = chain_attention_features(model, prefix, reasoning, answer)
        features.insert(0, "chain_id", chain.chain_id)
        features.insert(0, "chain_index", index)
        run.write_part("attention", index, features)
        written += 1
    from ..provenance import fingerprint

    manifest = run.read_manifest()
    # What the features were computed from (they depend on the chains' tokens only, not on pruning steps).
    manifest["attention"] = {"model": spec, "n_layers": int(model.config.num_hidden_layers),
                             "seconds": round(time.perf_counter() - started, 3), "fingerprint": fingerprint(run)}
    run.write_manifest(manifest)
    return written


def _resolve_model(model, manifest: dict, device: str, dtype: str):
    if model is None or isinstance(model, (str, os.PathLike)):
        from ..models import load_model

        spec = str(model) if model is not None else (manifest.get("model") or {}).get("spec")
        if not spec or spec in ("synthetic", "bench"):
            raise CotSurvivalError("E041", reason=f"the run records no loadable model ({spec!r}); pass --model")
        loaded, _, _ = load_model(spec, device=device, dtype=dtype, attn_implementation="eager")
        return loaded, spec
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")  # sdpa/flash kernels do not return attention weights
    else:
        model.config._attn_implementation = "eager"
    return model.eval(), type(model).__name__


def chain_attention_features(model, prefix: list[int], reasoning: list[int], answer: list[int]) -> pd.DataFrame:
    """Features of one chain (see the module docstring): one row per reasoning token."""
    import torch

    p, r, a = len(prefix), len(reasoning), len(answer)
    device = next(model.parameters()).device
    ids = torch.tensor([prefix + reasoning + answer], device=device)
    out = model(input_ids=ids, output_attentions=True)
    if not out.attentions or out.attentions[0] is None:
        raise CotSurvivalError("E041", reason="the model returned no attention weights (load it with attn_implementation='eager')")
    # [layers, queries, keys], mean over heads, in float32 whatever the model dtype.
    attn = torch.stack([layer[0].float().mean(dim=0) for layer in out.attentions])
    block = attn[:, :, p:p + r]
    answer_mean = block[:, p + r:, :].sum(dim=1) / a if a else torch.zeros(len(attn), r, device=device)
    later_sum = torch.tril(block[:, p:p + r, :], diagonal=-1).sum(dim=1)
    n_later = torch.arange(r - 1, -1, -1, device=device, dtype=torch.float32).clamp(min=1)
    later_mean = later_sum / n_later
    logp = torch.log_softmax(out.logits[0].float(), dim=-1)
    surprisal = np.full(r, np.nan)
    positions = torch.arange(max(p, 1), p + r, device=device)
    if len(positions):
        values = -logp[positions - 1, ids[0, positions]]
        surprisal[r - len(positions):] = values.cpu().numpy()
    frame = {"position": np.arange(r), "surprisal": surprisal}
    for layer in range(len(attn)):
        frame[f"attn_answer_L{layer:02d}"] = answer_mean[layer].cpu().numpy().astype(np.float64)
    for layer in range(len(attn)):
        frame[f"attn_later_L{layer:02d}"] = later_mean[layer].cpu().numpy().astype(np.float64)
    return pd.DataFrame(frame)


# --------------------------------------------------------------------------- predictors
def roc_auc(labels, scores) -> float:
    """ROC AUC via the Mann–Whitney rank sum (ties count one half); nan with one class only."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    n1, n0 = int(labels.sum()), int((~labels).sum())
    if n1 == 0 or n0 == 0:
        return np.nan
    ranks = stats.rankdata(scores)
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def survived_past(df: pd.DataFrame, threshold: float = 0.5) -> pd.Series:
    """Whether each token survived past normalized step ``threshold`` (boolean; missing when unknown).

    A censored token counts as surviving when its run went at least that far; otherwise the
    answer is unknown.
    """
    out = pd.Series(df["survival"] > threshold, index=df.index, dtype="boolean")
    unknown = df["censored"] & (df["survival"] < threshold)
    out[df["censored"] & ~unknown] = True
    out[unknown] = pd.NA
    return out


def feature_columns(df: pd.DataFrame) -> list[str]:
    """Attention and surprisal columns present in a token table."""
    cols = attention_layers(df, "answer") + attention_layers(df, "later")
    return (["surprisal"] if "surprisal" in df else []) + cols


def feature_correlations(df: pd.DataFrame, features: list[str] | None = None, *, target: str = "survival",
                         min_tokens: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-chain Spearman correlation between each feature and survival, and its distribution.

    Returns
    -------
    per_chain : pandas.DataFrame
        ``chain_index, feature, rho, n_tokens``.
    summary : pandas.DataFrame
        ``feature, mean_rho, lower, upper, median_rho, wilcoxon_p, n_chains, n_tokens``: the
        mean over chains with a t-interval, and a Wilcoxon signed-rank test of rho against 0.
        Chains with fewer than ``min_tokens`` tokens or a constant column are skipped.
    """
    features = features or feature_columns(df)
    rows = []
    for index, chain in df.groupby("chain_index", sort=True):
        for feature in features:
            sub = chain[[feature, target]].dropna()
            if len(sub) < min_tokens or sub[feature].nunique() < 2 or sub[target].nunique() < 2:
                continue
            rho = stats.spearmanr(sub[feature], sub[target]).statistic
            rows.append({"chain_index": int(index), "feature": feature, "rho": float(rho), "n_tokens": len(sub)})
    per_chain = pd.DataFrame(rows, columns=["chain_index", "feature", "rho", "n_tokens"])
    summary = []
    for feature in features:
        sub = per_chain[per_chain["feature"] == feature]
        ci = mean_ci(sub["rho"])
        nonzero = sub["rho"][sub["rho"] != 0]
        p = float(stats.wilcoxon(nonzero).pvalue) if len(nonzero) >= 2 else np.nan
        summary.append({"feature": feature, "mean_rho": ci["mean"], "lower": ci["lower"], "upper": ci["upper"],
                        "median_rho": ci["median"], "wilcoxon_p": p, "n_chains": ci["n"],
                        "n_tokens": int(sub["n_tokens"].sum())})
    return per_chain, pd.DataFrame(summary)


def best_layers(summary: pd.DataFrame, per_chain: pd.DataFrame | None = None, *, n_resamples: int = 20000,
                seed: int = 0) -> dict:
    """The layer with the highest mean per-chain rho for each attention kind, adjusted for the selection.

    With ``per_chain`` (from :func:`feature_correlations`), ``p_selection_adjusted`` is a max-statistic
    test: the largest |t| over all layers of that kind is compared with its distribution when every
    chain's row of rhos is sign-flipped as a whole (the same flips for all layers, which keeps the
    dependence between layers), so picking the best of ~30 layers does not make it look significant.
    """
    out = {}
    for kind in ("answer", "later"):
        sub = summary[summary["feature"].str.startswith(f"attn_{kind}_L")].dropna(subset=["mean_rho"])
        if len(sub):
            best = sub.loc[sub["mean_rho"].idxmax()]
            out[kind] = {"feature": best["feature"], "layer": int(best["feature"].rsplit("L", 1)[1]),
                         "mean_rho": float(best["mean_rho"]), "lower": float(best["lower"]),
                         "upper": float(best["upper"]), "n_chains": int(best["n_chains"]),
                         "n_layers_compared": int(len(sub))}
            if per_chain is not None and len(per_chain):
                out[kind].update(_max_t_sign_flip(per_chain, list(sub["feature"]), n_resamples, seed))
    return out


def _max_t_sign_flip(per_chain: pd.DataFrame, features: list[str], n_resamples: int, seed: int) -> dict:
    """Sign-flip max-|t| test over layers (Westfall-Young single step); chains with a missing layer dropped."""

    wide = per_chain[per_chain["feature"].isin(features)].pivot(index="chain_index", columns="feature", values="rho")
    wide = wide.dropna()
    x = wide.to_numpy(float)
    n = len(x)
    if n < 2:
        return {"p_selection_adjusted": np.nan, "selection_test": "too few chains"}

    signs, exact = _flip_patterns(n, n_resamples, np.random.default_rng(seed))
    sq = (x ** 2).sum(axis=0)  # invariant under sign flips
    def t_of(means):
        var = (sq - n * means ** 2) / (n - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.abs(means) / np.sqrt(np.maximum(var, 1e-300) / n)
    observed = float(t_of(x.mean(axis=0)).max())
    hits = 0
    for block in np.array_split(signs, max(1, len(signs) // 4096)):
        hits += int((t_of(block @ x / n).max(axis=1) >= observed * (1 - 1e-12)).sum())
    p = hits / len(signs) if exact else (hits + 1) / (len(signs) + 1)
    return {"p_selection_adjusted": float(min(1.0, p)), "n_chains_selection": int(n),
            "selection_test": (f"max-|t| over {x.shape[1]} layers under chain sign flips "
                               f"({'exact' if exact else 'Monte Carlo'}, {n} chains)")}


def group_folds(groups: np.ndarray, n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold number per row, whole groups (chains) per fold, group order shuffled with ``seed``."""
    unique = np.unique(groups)
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(rng.permutation(unique), np.arange(len(unique)) % n_folds))
    return np.array([fold_of[g] for g in groups])


def ridge_fit_predict(x_train, y_train, x_test, alpha: float = 1.0) -> np.ndarray:
    """Closed-form ridge regression on standardized features (intercept unpenalized).

    Written with numpy (a dozen lines) rather than adding scikit-learn as a dependency.
    """
    mean, sd = x_train.mean(axis=0), x_train.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    xs, xt = (x_train - mean) / sd, (x_test - mean) / sd
    y_mean = y_train.mean()
    k = xs.shape[1]
    beta = np.linalg.solve(xs.T @ xs + alpha * np.eye(k), xs.T @ (y_train - y_mean))
    return xt @ beta + y_mean


def ridge_probe(df: pd.DataFrame, features: list[str], *, target: str = "survival", alpha: float = 1.0,
                n_folds: int = 5, seed: int = 0, threshold: float = 0.5) -> dict:
    """Chain-grouped cross-validated ridge probe from features to survival.

    Folds hold out whole chains, so a chain's tokens never inform their own predictions (tokens
    of a chain share context and would leak). Scores are pooled over held-out folds.

    Returns
    -------
    dict
        ``spearman`` (pooled held-out), ``mean_chain_spearman`` (with ``lower``/``upper``),
        ``auc`` for "survives past ``threshold``", ``n_features, n_folds, alpha, n_tokens,
        n_chains`` (or ``note``).
    """
    frame = df.dropna(subset=[target])
    frame = frame.assign(**{f: frame[f].fillna(0.0) for f in features})
    n_chains = frame["chain_index"].nunique()
    out = {"n_features": len(features), "alpha": alpha, "n_tokens": int(len(frame)), "n_chains": int(n_chains)}
    if n_chains < 2 or not features:
        out["note"] = "a chain-grouped probe needs at least 2 chains and 1 feature"
        return out
    folds = group_folds(frame["chain_index"].to_numpy(), min(n_folds, n_chains), seed)
    x, y = frame[features].to_numpy(float), frame[target].to_numpy(float)
    prediction = np.empty(len(frame))
    for fold in np.unique(folds):
        test = folds == fold
        prediction[test] = ridge_fit_predict(x[~test], y[~test], x[test], alpha)
    out.update(n_folds=int(len(np.unique(folds))), **_score(frame.assign(_pred=prediction), "_pred", target, threshold))
    out["_prediction"] = pd.Series(prediction, index=frame.index)
    return out


def compare_probes(df: pd.DataFrame, first: pd.Series, second: pd.Series, *, threshold: float = 0.5,
                   n_resamples: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Held-out AUCs of two probes with chain-bootstrap CIs and a paired chain-bootstrap test.

    Chains are resampled with replacement (all their tokens come along) and both AUCs are computed
    on the same resample, so the difference's interval accounts for their correlation. The paired
    p-value is twice the smaller tail of the bootstrap difference around 0. Hand-written because
    scipy's ``bootstrap`` resamples observations, not clusters.
    """
    labels = survived_past(df, threshold)
    known = labels.notna().to_numpy()
    frame = pd.DataFrame({"chain": df["chain_index"].to_numpy(), "y": labels.fillna(False).to_numpy(bool),
                          "a": first.reindex(df.index).to_numpy(float), "b": second.reindex(df.index).to_numpy(float)})[known]
    chains = frame["chain"].unique()
    groups = {c: np.flatnonzero(frame["chain"].to_numpy() == c) for c in chains}
    y, a, b = frame["y"].to_numpy(), frame["a"].to_numpy(), frame["b"].to_numpy()
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_resamples):
        idx = np.concatenate([groups[c] for c in rng.choice(chains, len(chains))])
        draws.append((roc_auc(y[idx], a[idx]), roc_auc(y[idx], b[idx])))
    draws = np.array(draws)
    draws = draws[~np.isnan(draws).any(axis=1)]
    diff = draws[:, 0] - draws[:, 1]
    q = [alpha / 2, 1 - alpha / 2]
    out = {"auc": roc_auc(y, a), "auc_other": roc_auc(y, b), "n_chains": int(len(chains)), "n_tokens": int(len(y)),
           "n_resamples": int(len(draws)), "test": f"paired chain-bootstrap ({len(chains)} chains)"}
    if len(draws):
        out.update(auc_ci=np.quantile(draws[:, 0], q).tolist(), auc_other_ci=np.quantile(draws[:, 1], q).tolist(),
                   difference=out["auc"] - out["auc_other"], difference_ci=np.quantile(diff, q).tolist(),
                   p_value=float(min(1.0, 2 * min((diff <= 0).mean(), (diff >= 0).mean()))))
    return out


def _score(frame: pd.DataFrame, score: str, target: str, threshold: float) -> dict:
    per_chain = [stats.spearmanr(c[score], c[target]).statistic for _, c in frame.groupby("chain_index")
                 if len(c) >= 3 and c[score].nunique() > 1 and c[target].nunique() > 1]
    ci = mean_ci(per_chain)
    labels = survived_past(frame, threshold)
    known = labels.notna().to_numpy()
    pooled = (stats.spearmanr(frame[score], frame[target]).statistic
              if frame[score].nunique() > 1 and frame[target].nunique() > 1 else np.nan)
    return {"spearman": float(pooled), "mean_chain_spearman": ci["mean"], "lower": ci["lower"], "upper": ci["upper"],
            "auc": roc_auc(labels[known].astype(bool), frame.loc[known, score]), "n_auc_tokens": int(known.sum()),
            "n_positive": int(labels[known].astype(bool).sum())}


def attention_predictors(df: pd.DataFrame, *, alpha: float = 1.0, n_folds: int = 5, seed: int = 0,
                         threshold: float = 0.5) -> dict:
    """How well attention (and surprisal) predicts survival: correlations, best layer, probes.

    Returns
    -------
    dict
        ``correlations`` (summary table as records), ``best_layer``, ``probe_attention`` (ridge on
        all attention layers), ``probe_surprisal`` (ridge on surprisal alone) and
        ``surprisal_raw`` (surprisal itself as the score), each with ``n_tokens`` and ``n_chains``.
    """
    features = feature_columns(df)
    attn = [f for f in features if f.startswith("attn_")]
    if not features:
        raise CotSurvivalError("E041", reason="the run has no attention features; run `cotsurvival attention RUN`")
    per_chain, summary = feature_correlations(df, features)
    result = {"correlations": summary, "best_layer": best_layers(summary, per_chain, seed=seed)}
    if attn:
        result["probe_attention"] = ridge_probe(df, attn, alpha=alpha, n_folds=n_folds, seed=seed, threshold=threshold)
    if "surprisal" in df:
        result["probe_surprisal"] = ridge_probe(df, ["surprisal"], alpha=alpha, n_folds=n_folds, seed=seed,
                                                threshold=threshold)
    first, second = (result.get(k, {}).pop("_prediction", None) for k in ("probe_attention", "probe_surprisal"))
    if first is not None and second is not None:
        frame = df.dropna(subset=["survival"])
        result["probe_comparison"] = compare_probes(frame, first, second, threshold=threshold, seed=seed)
        raw = df.dropna(subset=["surprisal", "survival"])
        result["surprisal_raw"] = {**_score(raw, "surprisal", "survival", threshold), "n_tokens": int(len(raw)),
                                   "n_chains": int(raw["chain_index"].nunique())}
    return result
