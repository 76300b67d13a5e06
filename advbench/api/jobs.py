"""What :func:`advbench.api.attack` and :func:`advbench.api.evaluate` share: suite lookup, threats, and the
evaluation job (build it, reuse a stored result with the same fingerprint, or run it under the run's lock)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from advbench import runs
from advbench.attacks import ATTACKS, SUITES, Suite, single_attack_suite
from advbench.attacks.base import AttackContext
from advbench.core import distributed
from advbench.core.progress import make_progress
from advbench.core.signals import StopFlag, stop_on_signals
from advbench.engine.evaluate import evaluate_suite
from advbench.engine.job import EvalJob, identity_of
from advbench.errors import UserError
from advbench.threat import ThreatModel, parse_eps_list


def suite_for(suite: str | None, attack: str | None, attack_options: dict[str, Any] | None) -> Suite:
    """The suite to run: one ``attack`` with its options (checked now, before any work), else a named suite."""
    if attack is not None:
        name = ATTACKS.canonical(attack)
        inst = ATTACKS.get(name)(ThreatModel(), **(attack_options or {}))  # typed options fail here, before any work
        # the typed values (``--set steps=5`` gives the int 5, as the Python API does): same job, same fingerprint
        typed = {k: getattr(inst.options, k) for k in (attack_options or {})}
        return single_attack_suite(name, typed)
    if attack_options:
        raise UserError("--set for attacks needs --attack NAME (suites have fixed settings)")
    return SUITES.get("pgd" if suite is None else suite)


def threats_for(eps: str | None, norm: str, default_eps: str) -> list[ThreatModel]:
    """The threats of an ``--eps`` list (one per budget) in ``norm``, or ``default_eps`` alone."""
    if not eps:
        return [ThreatModel.parse(default_eps, norm)]
    return [ThreatModel.parse(e, norm) for _, e in parse_eps_list(eps)]


@contextlib.contextmanager
def main_rank_first(download: bool) -> Iterator[None]:
    """With ``download`` under several processes: rank 0 fetches the data, the others then read it."""
    first = bool(download) and distributed.is_distributed()
    if first and not distributed.is_main():
        distributed.barrier()
    yield
    if first and distributed.is_main():
        distributed.barrier()


def _stored_result(out_file: Path, job: EvalJob, force: bool) -> dict[str, Any] | None:
    """The result already in ``out_file`` if it is of this very job (same fingerprint); the same on every rank."""
    existing = None
    if distributed.is_main() and out_file.is_file() and not force:
        try:
            stored = runs.read_json(out_file)
        except runs.CorruptFile:  # a truncated or garbled result holds nothing to reuse: it is recomputed
            stored = None
        if isinstance(stored, dict) and stored.get("fingerprint") == job.fingerprint():
            existing = stored
    return distributed.broadcast_object(existing)  # every rank takes the same branch


def _lock_for_all_ranks(stack: contextlib.ExitStack, out_dir: Path, purpose: str) -> None:
    """Rank 0 takes the run's lock for all ranks (the others write only their own shard files); a lock held
    elsewhere fails on every rank with rank 0's message."""
    error = None
    if distributed.is_main():
        try:
            stack.enter_context(runs.RunLock(out_dir, purpose))
        except UserError as err:
            error = str(err)
    error = distributed.broadcast_object(error)
    if error:
        raise UserError(error)


def run_job(model: Any, data: Any, *, the_suite: Suite, threats: list[ThreatModel], n_eval: int, batch_size: int,
            seed: int, described: dict[str, Any] | None, out_dir: Path, dev: Any, source_model: Any,
            source_desc: dict[str, Any] | None, hygiene: bool, force: bool, quiet: bool, stop: Any,
            batch_hook: Any, attack_hook: Any, adapt: bool = False, tag: str | None = None) -> dict[str, Any]:
    """Shared tail of :func:`attack` and :func:`evaluate`: build the job, reuse a stored result, run, write.

    ``adapt``: probe the model first and add the attack suited to each kind of gradient masking found; ``tag``:
    the result is ``attacks/SUITE@TAG.json`` (a kept epoch checkpoint's results beside the best one's)."""
    job = EvalJob(suite=the_suite, threats=threats, n_eval=n_eval, batch_size=batch_size, seed=seed,
                  source=described, transfer_source=source_desc, hygiene=hygiene, adapt=adapt,
                  available=frozenset({"source_model"} if source_model is not None else set()),
                  identity=identity_of(model, data, n_eval, source_model))
    if not job.entries():
        reasons = "; ".join(f"{s['label']}: {s['reason']}" for s in job.skipped())
        raise UserError(f"nothing to run in suite '{the_suite.name}' ({reasons})")
    out_file = out_dir / "attacks" / (f"{the_suite.name}@{tag}.json" if tag else f"{the_suite.name}.json")
    existing = _stored_result(out_file, job, force)
    if existing is not None:
        return {**existing, "reused": True}  # the stored result of this very job (not rewritten)
    flag = stop or StopFlag()
    progress = make_progress(quiet or not distributed.is_main())
    # the bars show AutoAttack's components as they finish, then the caller's hook is called
    context = AttackContext(source_model=source_model, source=source_desc, hook=progress.attack_hook(attack_hook))
    with contextlib.ExitStack() as stack:
        _lock_for_all_ranks(stack, out_dir, f"attack {the_suite.name}")
        stack.enter_context(progress)
        stack.enter_context(stop_on_signals(flag))
        return evaluate_suite(model, data, job, out_file, device=dev, progress=progress, stop=flag,
                              batch_hook=batch_hook, context=context)
