"""The Ray backend of ``prune``: one actor per GPU (or CPU slot) prunes chains; the driver commits them.

Each actor loads the model once and runs :func:`~cotsurvival.pruning.engine.greedy_prune` on the
chains handed to it, one at a time; it returns the :class:`ChainTrace` (and, for the attention
baseline, the answer-attention vector). The driver alone writes the run directory, with the same
commit code as the local backend, so a run made with ``--backend ray`` is byte-for-byte the same
kind of run directory, can be resumed by either backend, and needs no shared filesystem for its
output (results stream back through Ray's object store). Only the model must be reachable from
every node: a hub id (with network or a populated HF cache), ``smollm2-135m``, or a path on a
filesystem that every node mounts.

Faults: when an actor dies (node lost, OOM-killed, ``ray.kill``), the chain it held goes back to
the queue and another actor takes it; a replacement actor is started so the pool keeps its size.
A chain is committed only when its trace arrives, so nothing is lost or written twice. Mid-chain
checkpoints are a local-backend feature: a chain interrupted on an actor starts over (a resumed
run still skips every committed chain, and continues committed chains from their tables).
"""
from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from ..errors import CotSurvivalError
from .baselines import answer_attention
from .engine import greedy_prune
from .methods import make_scorer

ACTOR_NAME = "cotsurvival-prune-{run}-{k}"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise CotSurvivalError("E070") from None
    return ray


class _Worker:
    """Actor body (wrapped with ``ray.remote`` at start): loads the model once, prunes chains."""

    def __init__(self, model, loaded, device, dtype, method, objective, max_batch_tokens, trust_remote_code,
                 allow_unsafe_weights, threads, name):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.name, self.error = name, None
        try:
            if loaded is not None:
                self.lm, self.tokenizer, self.info = loaded
            else:
                from ..models import load_model

                self.lm, self.tokenizer, self.info = load_model(model, device=device, dtype=dtype,
                                                                trust_remote_code=trust_remote_code,
                                                                allow_unsafe_weights=allow_unsafe_weights)
            self.scorer = make_scorer(self.lm, method=method, objective=objective, max_batch_tokens=max_batch_tokens)
        except CotSurvivalError as exc:  # sent back as (code, fields): the driver raises the same one-line error
            self.error = _Failure(exc.code, exc.fields)

    def describe(self):
        """``(tokenizer, ModelInfo, scorer class name, worker name)``: the driver encodes chains with this tokenizer."""
        if self.error is not None:
            return self.error
        return self.tokenizer, self.info, type(self.scorer).__name__, self.name

    def prune(self, index, item, wanted, start, attention, approx=None, perturbation=None, reuse=None):
        try:
            trace = greedy_prune(self.scorer, item, wanted, start=start, approx=approx, perturbation=perturbation,
                                 reuse=reuse)
            vector = answer_attention(self.lm, item) if attention and perturbation is None else None
        except CotSurvivalError as exc:
            return _Failure(exc.code, exc.fields)
        return index, trace, vector, self.name


@dataclass(frozen=True)
class _Failure:
    """A CotSurvivalError crossing a process boundary (its constructor does not round-trip through pickle)."""

    code: str
    fields: dict

    def error(self) -> CotSurvivalError:
        return CotSurvivalError(self.code, **self.fields)


@dataclass
class RayPool:
    """A pool of pruning actors on a Ray cluster (started locally when none is reachable)."""

    ray: object
    actors: dict = field(default_factory=dict)  # name -> handle
    factory: Callable | None = None
    tokenizer: object = None
    info: object = None
    scorer_name: str = ""
    address: str | None = None
    owns_cluster: bool = False
    retries: list = field(default_factory=list)  # {chain_id, worker, error}
    worker_of_chain: dict = field(default_factory=dict)
    _next: int = 0

    # ------------------------------------------------------------------ start / stop
    @classmethod
    def start(cls, *, model: str, loaded_model=None, device: str = "auto", dtype: str = "auto", method: str = "auto",
              objective: str = "joint", max_batch_tokens: int = 4096, trust_remote_code: bool = False,
              allow_unsafe_weights: bool = False, address: str | None = None, workers: int | None = None,
              gpus_per_worker: float | None = None, cpus_per_worker: float = 1.0) -> "RayPool":
        ray = _import_ray()
        owns = False
        if not ray.is_initialized():
            owns = _connect(ray, address, workers, cpus_per_worker)
        resources = ray.cluster_resources()
        gpus = float(resources.get("GPU", 0))
        if gpus_per_worker is None:
            gpus_per_worker = 1.0 if gpus >= 1 else 0.0
        if gpus_per_worker < 0 or (workers is not None and workers < 1) or cpus_per_worker <= 0:
            raise CotSurvivalError("E086", option="--workers / --gpus-per-worker / cpus per worker", rule=">= 1 / >= 0 / > 0",
                                   value=(workers, gpus_per_worker, cpus_per_worker))
        if gpus_per_worker > 0 and gpus < gpus_per_worker and owns:
            raise CotSurvivalError("E072", reason=f"--gpus-per-worker {gpus_per_worker:g} but the local Ray cluster "
                                                   f"has {gpus:g} GPUs (use --gpus-per-worker 0 for CPU workers)")
        if workers is None:
            slots = gpus / gpus_per_worker if gpus_per_worker > 0 else float(resources.get("CPU", 1)) / cpus_per_worker
            workers = max(1, int(slots))
        # CPU actors get one torch thread per CPU they reserve; GPU actors keep torch's default.
        threads = max(1, int(cpus_per_worker)) if gpus_per_worker == 0 else 0
        remote = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=0)(_Worker)
        shipped = put_loaded_model(ray, loaded_model)
        run_tag = f"{os.getpid()}-{int(time.time() * 1000) % 10**8}"

        pool = cls(ray=ray, address=address, owns_cluster=owns)

        def factory():
            name = ACTOR_NAME.format(run=run_tag, k=pool._next)
            pool._next += 1
            handle = remote.options(name=name).remote(model, shipped, device, dtype, method, objective,
                                                      max_batch_tokens, trust_remote_code, allow_unsafe_weights,
                                                      threads, name)
            pool.actors[name] = handle
            return name

        pool.factory = factory
        names = [factory() for _ in range(workers)]
        try:
            described = ray.get([pool.actors[n].describe.remote() for n in names])
        except Exception as exc:  # a worker died while loading: show the cause, not a Ray trace
            pool.close()
            raise _cause(ray, exc) from None
        failed = [d for d in described if isinstance(d, _Failure)]
        if failed:  # the model could not be loaded (E005, E011, ...): the same error as the local backend
            pool.close()
            raise failed[0].error()
        pool.tokenizer, pool.info, pool.scorer_name, _ = described[0]
        return pool

    def close(self) -> None:
        ray = self.ray
        for handle in self.actors.values():
            try:
                ray.kill(handle)
            except Exception:  # already gone
                pass
        self.actors.clear()
        if self.owns_cluster:
            ray.shutdown()

    # ------------------------------------------------------------------ work
    def run(self, jobs: Sequence[tuple], *, start_of: Callable, attention: bool,
            max_retries: int = 3, approx=None, follow_up: Callable | None = None) -> Iterator[tuple]:
        """Prune ``jobs`` = ``[(index, item, wanted), ...]``; yield ``(index, item, trace, attention, worker)``
        as chains finish (in any order). A chain whose actor dies is re-queued, up to ``max_retries`` times.
        ``approx`` is a parsed ``--approx`` spec (None: exact), passed to every actor's engine.

        A job ``(index, item, wanted, perturbation, reuse)`` prunes a perturbed replicate
        (:class:`~cotsurvival.pruning.engine.Perturbation`, reusing the greedy trace ``reuse``);
        ``trace.replicate`` says which. ``follow_up(job, trace)``, called once a job's result has been
        handled (yielded), returns jobs to queue next (a chain's replicates after its greedy path)."""

        def submit(actor, job):
            index, item, wanted = job[:3]
            perturbation, reuse = job[3:] if len(job) > 3 else (None, None)
            replicate = perturbation.replicate if perturbation is not None else 0
            return actor.prune.remote(index, item, wanted, start_of(index, item, replicate), attention, approx,
                                      perturbation, reuse)

        for job, (index, trace, vector, worker), _ in dispatch(
                self.ray, self.actors, self.factory, jobs, submit, key=lambda job: (job[0], job[1].chain.id),
                max_retries=max_retries, retries=self.retries,
                follow_up=None if follow_up is None else lambda job, result: follow_up(job, result[1])):
            if len(job) == 3:  # the greedy path (replicates may run elsewhere)
                self.worker_of_chain[job[1].chain.id] = worker
            yield index, job[1], trace, vector, worker

    def summary(self) -> dict:
        return {"address": self.address or "local", "workers": len(self.actors), "scorer": self.scorer_name,
                "retries": list(self.retries), "worker_of_chain": dict(self.worker_of_chain)}


def dispatch(ray, actors: dict, factory: Callable, jobs, submit: Callable, *, key: Callable, max_retries: int = 3,
             retries: list | None = None, follow_up: Callable | None = None) -> Iterator[tuple]:
    """Run ``jobs`` on a pool of actors, one job per idle actor; yield ``(job, result, actor name)`` as they finish.

    ``actors`` maps names to handles and ``factory()`` starts one more actor, adds it to ``actors``
    and returns its name; ``submit(handle, job)`` returns the task's object ref; ``key(job)`` is
    ``(attempt key, chain id)``. When an actor dies (node lost, OOM-killed, ``ray.kill``) its job
    goes back to the front of the queue and a replacement actor keeps the pool at its size; a job
    whose actors died more than ``max_retries`` times raises E071. Each death is appended to
    ``retries`` as ``{chain_id, worker, error}``. A task that fails while its actor lives raises
    the user-facing error (:func:`_cause`), as does a returned :class:`_Failure`. Nothing is yielded
    twice, so a caller that commits what it is given commits each job once. ``follow_up(job,
    result)``, called after a result was handled, returns jobs to queue next. Used by ``prune`` and
    ``resample``.
    """
    from ray.exceptions import RayActorError, RayTaskError

    queue = deque(jobs)
    idle = deque(actors)
    in_flight: dict = {}
    attempts: dict = {}
    while queue or in_flight:
        while queue and idle:
            name = idle.popleft()
            if name not in actors:
                continue
            job = queue.popleft()
            in_flight[submit(actors[name], job)] = (name, job)
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        name, job = in_flight.pop(ready[0])
        try:
            result = ray.get(ready[0])
            if isinstance(result, _Failure):
                raise result.error()
        except RayTaskError as exc:  # the job itself failed (not the actor): fail like the local backend
            raise _cause(ray, exc) from None
        except RayActorError as exc:
            attempt, chain_id = key(job)
            attempts[attempt] = attempts.get(attempt, 0) + 1
            reason = " ".join(str(exc).split())[:200]
            if retries is not None:
                retries.append({"chain_id": chain_id, "worker": name, "error": reason})
            actors.pop(name, None)
            if attempts[attempt] > max_retries:
                raise CotSurvivalError("E071", chain=chain_id, attempts=attempts[attempt], reason=reason) from None
            queue.appendleft(job)
            idle.append(factory())  # keep the pool at its size
            continue
        idle.append(name)
        yield job, result, name
        if follow_up is not None:
            queue.extend(follow_up(job, result))


def _connect(ray, address: str | None, workers: int | None, cpus_per_worker: float) -> bool:
    """Connect to ``address`` (or ``$RAY_ADDRESS``, or a running local cluster); else start one. True if started."""
    quiet = dict(log_to_driver=False, configure_logging=True, logging_level="error")
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        try:
            ray.init(address=target, **quiet)
        except Exception as exc:
            raise CotSurvivalError("E073", address=target, reason=" ".join(str(exc).split())[:200]) from None
        return False
    try:
        ray.init(address="auto", **quiet)
        return False
    except Exception:  # no running cluster: start a local one sized for the workers asked for
        pass
    num_cpus = int(workers * cpus_per_worker) if workers else None
    ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet)
    return True


def _cause(ray, exc: BaseException) -> BaseException:
    """The user-facing error inside a Ray task error (a CotSurvivalError stays one)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, CotSurvivalError):
        return cause
    if isinstance(exc, CotSurvivalError):
        return exc
    return CotSurvivalError("E074", reason=" ".join(str(cause or exc).split())[:300])


def put_loaded_model(ray, loaded_model):
    """``ray.put(loaded_model)``, without transformers' output-capturing hooks.

    A model that has once returned attentions or hidden states carries forward hooks from
    ``transformers.utils.output_capturing`` whose closures reach a ``ContextVar``, which no pickler can
    serialise, so Ray refuses the model. They are lifted off for the put (which serialises at once)
    and put back, with the flag that says they are installed, so each actor's copy installs its own on first use.
    """
    if loaded_model is None:
        return None
    lifted, flagged = [], []
    for module in loaded_model[0].modules():
        for key, hook in list(module._forward_hooks.items()):
            if getattr(hook, "__module__", "") == "transformers.utils.output_capturing":
                lifted.append((module, key, hook))
                del module._forward_hooks[key]
        if module.__dict__.pop("_output_capturing_hooks_installed", None) is not None:
            flagged.append(module)
    try:
        return ray.put(loaded_model)
    finally:
        for module, key, hook in lifted:
            module._forward_hooks[key] = hook
        for module in flagged:
            module._output_capturing_hooks_installed = True
