"""The Ray backend of ``resample``: one actor per GPU (or CPU slot) resamples whole chains.

The same pattern as ``prune --backend ray`` (:mod:`cotsurvival.pruning.ray_backend`, whose cluster
connection and error handling it reuses): each actor loads the model once and runs
:class:`~cotsurvival.resample.ChainResampler` on the chains handed to it; the driver alone writes
the run directory, a chain's rows as soon as they arrive. Each cut's rollouts are seeded from the
run's seed and the cut (not from the worker or the order of work), so a Ray run holds the same rows
as a local one on the same kind of device, and either backend resumes the other's run. An actor
that dies fails the call with E162; the chains already committed are kept, so re-running resumes.
"""
from __future__ import annotations

import time
from collections import deque

from .errors import CotSurvivalError
from .pruning.ray_backend import _cause, _connect, _Failure, _import_ray


class _Worker:
    """Actor body (wrapped with ``ray.remote`` at start): loads the model once, resamples chains."""

    def __init__(self, spec, loaded, device, dtype, trust_remote_code, allow_unsafe_weights, threads):
        import torch

        from .resample import ChainResampler

        if threads:
            torch.set_num_threads(threads)
        self.error = None
        try:
            if loaded is None:
                from .models import load_model

                loaded = load_model(spec, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                                    allow_unsafe_weights=allow_unsafe_weights)
            self.worker = ChainResampler(*loaded)
        except CotSurvivalError as exc:  # sent back as (code, fields): the driver raises the same one-line error
            self.error = _Failure(exc.code, exc.fields)

    def info(self):
        return self.error if self.error is not None else self.worker.info

    def chain(self, job, cuts, ratios, options, settings):
        try:
            rollouts = [self.worker.rollouts_at(job, cut, options, settings) for cut in cuts]
            regen = self.worker.regenerate(job, ratios, options, settings) if ratios else None
        except CotSurvivalError as exc:
            return _Failure(exc.code, exc.fields)
        return job.index, rollouts, regen


def run_on_ray(run, jobs, options, ratios, manifest, *, spec, loaded_model, device, dtype, workers, address, progress,
               trust_remote_code, allow_unsafe_weights):
    """Resample ``jobs`` on Ray actors; returns ``(ModelInfo, {"rollouts": n})``."""
    from .progress import make_bar
    from .resample import REGEN_TABLE, TABLE, commit, pending, settings_key

    ray = _import_ray()
    owns = False if ray.is_initialized() else _connect(ray, address, workers, 1.0)
    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0))
    per_gpu = 1.0 if gpus >= 1 else 0.0
    if workers is None:
        workers = max(1, int(gpus) if per_gpu else int(resources.get("CPU", 1)))
    remote = ray.remote(num_cpus=1, num_gpus=per_gpu, max_restarts=0)(_Worker)
    shipped = ray.put(loaded_model) if loaded_model is not None else None
    actors = [remote.remote(spec, shipped, device, dtype, trust_remote_code, allow_unsafe_weights,
                            1 if per_gpu == 0 else 0) for _ in range(workers)]
    try:
        infos = ray.get([a.info.remote() for a in actors])
        failed = [i for i in infos if isinstance(i, _Failure)]
        if failed:
            raise failed[0].error()
        info = infos[0]
        settings = settings_key(info, manifest, options)
        queue = deque()
        total = 0
        for job in jobs:
            cuts, rs, old, old_regen = pending(run, job, settings, ratios)
            if cuts or rs:
                queue.append((job, cuts, rs, old, old_regen))
                total += len(cuts) + len(rs)
        counts = {"rollouts": 0}
        idle, in_flight = deque(actors), {}
        bar = make_bar(total=total, desc=f"resample (ray, {workers} workers)", unit="cut", disable=not progress)
        began = time.perf_counter()
        try:
            while queue or in_flight:
                while queue and idle:
                    actor = idle.popleft()
                    job, cuts, rs, old, old_regen = queue.popleft()
                    ref = actor.chain.remote(job, cuts, rs, options, settings)
                    in_flight[ref] = (actor, job, old, old_regen, len(cuts) + len(rs))
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                actor, job, old, old_regen, n = in_flight.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except Exception as exc:  # noqa: BLE001 - an actor died or the task failed: one line, progress kept
                    cause = _cause(ray, exc)
                    if cause.code != "E074":
                        raise cause from None
                    raise CotSurvivalError("E162", chain=job.chain_id, reason=cause.fields.get("reason", "")) from None
                if isinstance(result, _Failure):
                    raise result.error()
                _, rollouts, regen = result
                for frame in rollouts:
                    old = commit(run, TABLE, job.index, old, frame)
                    counts["rollouts"] += len(frame)
                if regen is not None:
                    commit(run, REGEN_TABLE, job.index, old_regen, regen)
                idle.append(actor)
                bar.update(n)
                bar.set_postfix_str(f"{counts['rollouts'] / (time.perf_counter() - began):.2f} rollouts/s")
        finally:
            bar.close()
    finally:
        for actor in actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if owns:
            ray.shutdown()
    return info, counts
