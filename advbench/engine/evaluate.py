"""The evaluation loop: clean accuracy, validation PGD, and resumable attack suites.

Suites are evaluated on the first ``n_eval`` test images in order, batch by batch. After every batch
the per-sample results so far are written atomically to ``attacks/.<suite>.partial.json``; a killed
evaluation resumes from there and gives the same per-sample result as an uninterrupted one, because
every batch's randomness comes from a generator seeded by (seed, attack, eps, batch index; a minimum-distance
attack's without the eps, so its distances are one set for every eps). Attacks
with internal progress (AutoAttack) keep per-batch state files in ``attacks/.<suite>.state/``.

Sharded (``torchrun`` or ``advbench attack --nproc N``): rank r of W evaluates global batches r, r + W,
r + 2W, ... of every attack, with its own resume files (:mod:`advbench.engine.shards`); rank 0 gathers
the per-batch results and writes the merged result (:mod:`advbench.engine.results`). Since a batch is
cut and seeded by its global index alone, the merged per-sample results equal one process's. A rerun
resumes each shard from its files, and also takes the finished batches of partial files of another
world size.

Every result carries hygiene checks (:mod:`advbench.engine.hygiene`, :mod:`advbench.engine.checklist`): a
``checks`` block with pass/warn/fail and the numbers behind each check, and a verdict per number
(:mod:`advbench.engine.verdict`). A randomized model's noise is seeded per (seed, entry, eps, batch), so a
resumed evaluation reproduces it. With ``adapt`` the probe runs first and the attack suited to each masking
kind it finds is added (:mod:`advbench.engine.adapt`); for a randomized model the clean pass then uses the
same deterministic verdict as the adaptive attack.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advbench import runs
from advbench.attacks import Attack, SuiteEntry, build_attack
from advbench.attacks.adaptive import AdaptivePGDOptions
from advbench.attacks.base import AttackContext
from advbench.attacks.eot import batch_verdict, seeded_model_rng
from advbench.core import distributed
from advbench.core.passes import frozen
from advbench.core.progress import NullProgress
from advbench.core.seeding import make_generator
from advbench.core.signals import Interrupted, StopFlag
from advbench.data import TensorSplit
from advbench.engine import adapt, hygiene
from advbench.engine.job import EvalJob, as_eval_data
from advbench.engine.results import assemble, attack_batch_record
from advbench.engine.shards import ShardSync, load_state, merge_shards, remove_resume_files, shard_batches, shard_paths
from advbench.threat import ThreatModel

#: clean top-k accuracy recorded beside top-1 for models with more than this many classes (ImageNet tables)
TOP_K = 5
#: (key, suite entry or None for the clean pass, threat, number of images) of every pass over the images
Todo = list[tuple[str, SuiteEntry | None, ThreatModel, int]]


def to_model_input(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Images as the model sees them: uint8 -> float32 / 255 (as :func:`advbench.data.batches`), floats as given."""
    x = x.to(device)
    return x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x


@dataclass
class _ShardPass:
    """This process's pass over its batches of every entry, saving the state after each batch."""

    model: nn.Module
    xs: torch.Tensor
    ys: torch.Tensor
    job: EvalJob
    state: dict[str, Any]
    device: torch.device
    partial_file: Path
    state_dir: Path
    context: AttackContext
    progress: Any
    stop: StopFlag
    batch_hook: Any
    sync: ShardSync
    rank: int
    world: int
    #: draws of the clean verdict: 1, or the EOT verdict's for a randomized model under ``--adapt``
    clean_samples: int = 1

    @property
    def label(self) -> str:
        """`` [rank r/W]`` under several processes, else empty (progress lines and messages)."""
        return "" if self.world == 1 else f" [rank {self.rank}/{self.world}]"

    def run(self, todo: Todo) -> str:
        """Evaluate every entry in order; returns why it stopped early ("" when it ran to the end)."""
        for key, entry, threat, n_e in todo:
            interrupted = self._entry(key, entry, threat, n_e)
            if interrupted:
                return interrupted
        return ""

    def _entry(self, key: str, entry: SuiteEntry | None, threat: ThreatModel, n_e: int) -> str:
        """This shard's batches of one entry (those already done are skipped); returns why it stopped, or ""."""
        done = self.state["done"].setdefault(key, {})
        attack = None if entry is None else build_attack(
            entry.attack, threat, entry.options, dataclasses.replace(self.context, key=key, state_dir=self.state_dir))
        bs = self.job.batch_size
        n_batches = math.ceil(n_e / bs)
        mine = shard_batches(n_batches, self.rank, self.world)
        handle = self.progress.task(f"{key}{self.label}", len(mine))
        interrupted = ""
        for i, b in enumerate(mine):
            if str(b) in done:
                self.progress.advance(handle, 1)
                continue
            x = to_model_input(self.xs[b * bs:min(n_e, (b + 1) * bs)], self.device)
            y = self.ys[b * bs:min(n_e, (b + 1) * bs)].to(self.device)
            done[str(b)] = self._batch(attack, key, threat, b, x, y)
            runs.write_json(self.partial_file, self.state)
            self.progress.advance(handle, 1, images=x.shape[0])
            if self.batch_hook is not None:
                self.batch_hook(key, b)
            if self.stop.requested or self.sync.stopped_elsewhere():
                why = "" if self.stop.requested else " because another rank was stopped"
                interrupted = f"evaluation stopped{why} at {key} batch {b + 1}/{n_batches}{self.label} " \
                    f"({i + 1}/{len(mine)} of this process's batches)"
                break
        self.progress.done(handle)
        return interrupted

    def _plain(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Top-1 correctness and, for more than 5 classes, top-5 correctness (the label among the 5 largest logits)."""
        with torch.no_grad():
            logits = self.model(x)
        top5 = None
        if logits.shape[1] > TOP_K:
            top5 = (logits.topk(TOP_K, dim=1).indices == y[:, None]).any(dim=1)
        return logits.argmax(1) == y, top5

    def _batch(self, attack: Attack | None, key: str, threat: ThreatModel, b: int, x: torch.Tensor,
               y: torch.Tensor) -> dict[str, Any]:
        """The record of global batch ``b``: clean predictions, or the attack seeded by (seed, key, eps, b)."""
        t0 = time.perf_counter()
        if attack is None:
            top5 = None
            with frozen(self.model, "eval"), seeded_model_rng(x.device, self.job.seed, "clean", b):
                if self.clean_samples > 1:
                    correct = batch_verdict(self.model, self.clean_samples, b).judge(x, y)
                else:
                    correct, top5 = self._plain(x, y)
            record: dict[str, Any] = {"forward": x.shape[0] * self.clean_samples, "backward": 0}
            if top5 is not None:
                record["top5"] = [int(c) for c in top5.tolist()]
        else:
            attack.context.batch = b
            # a minimum-distance attack's search does not depend on eps: seeded without it, its distances are
            # the same at every eps of the suite (and computed once, see advbench.attacks.distances._remembered)
            seed_key, eps_seed = key, threat.eps_text
            if getattr(attack, "measures_distance", False):  # the entry's key without its "@eps" and no eps
                seed_key, eps_seed = key.removesuffix(f"@{threat.eps_text}"), "any eps"
            gen = make_generator(x.device, self.job.seed, seed_key, eps_seed, b)
            with seeded_model_rng(x.device, self.job.seed, seed_key, eps_seed, b):  # a randomized model's noise
                res = attack(self.model, x, y, generator=gen)
            correct = res.correct
            record = attack_batch_record(res, x, threat.norm)
        return {"correct": [int(c) for c in correct.tolist()], "seconds": time.perf_counter() - t0, **record}


def _probe(model: nn.Module, data: TensorSplit, n: int, job: EvalJob, device: torch.device) -> dict[str, Any]:
    """The model probe on the first images, with the share of the most frequent label among the ``n`` evaluated."""
    k = min(n, hygiene.PROBE_N)
    probe = hygiene.probe_model(model, to_model_input(data.x[:k], device), data.y[:k].to(device), job.batch_size)
    probe["majority_fraction"] = float(torch.bincount(data.y[:n].long()).max()) / max(1, n) if n else 0.0
    return probe


def _plan_adaptation(model: nn.Module, data: TensorSplit, n: int, job: EvalJob, state: dict[str, Any],
                     device: torch.device) -> EvalJob:
    """``--adapt``: probe before attacking (rank 0, shared), pick the adaptive entries and the clean verdict; kept in
    the resume state so a resumed evaluation runs the same entries."""
    if "probe" not in state:
        state["probe"] = distributed.broadcast_object(_probe(model, data, n, job, device)
                                                      if distributed.is_main() else None)
    if "adaptive" not in state:
        kinds = adapt.masking_kinds(state["probe"])
        state["adaptive"] = [dataclasses.asdict(e) for e in adapt.adaptive_entries(state["probe"])]
        state["clean_verdict_samples"] = AdaptivePGDOptions().verdict_samples if "randomized" in kinds else 1
    return dataclasses.replace(job, adaptive=tuple(SuiteEntry(**d) for d in state["adaptive"]))


def _gather(model: nn.Module, state: dict[str, Any], todo: Todo, job: EvalJob,
            world: int) -> tuple[dict[str, Any], str | None]:
    """Every rank's batches merged in global order (this state for one process) and the model digest after
    the evaluation. Collective under several processes, where the ranks must have evaluated equal weights."""
    digest_after = hygiene.model_digest(model) if job.hygiene or world > 1 else None
    if world <= 1:
        return state, digest_after
    shards = distributed.all_gather_objects({"done": state["done"], "digest_before": state.get("digest_before"),
                                             "digest_after": digest_after})
    before = {s["digest_before"] for s in shards}
    if len(before) != 1:
        raise RuntimeError(f"the {world} ranks evaluated different weights (model digests {sorted(before)}); "
                           "every rank must load the same checkpoint")
    # an attack that changed the model on any rank is reported by the eval-mode check
    digest_after = next((s["digest_after"] for s in shards if s["digest_after"] != s["digest_before"]), digest_after)
    return {**state, "done": merge_shards([s["done"] for s in shards], todo, job.batch_size)}, digest_after


def evaluate_suite(model: nn.Module, split: Any, job: EvalJob, out_file: str | Path, *,
                   device: torch.device, progress: NullProgress | None = None, stop: StopFlag | None = None,
                   batch_hook: Any = None, context: AttackContext | None = None) -> dict[str, Any]:
    """Run ``job`` on ``model`` and write the result JSON to ``out_file`` (resumable per batch).

    ``split`` is anything with ``.x``/``.y`` (uint8 or [0, 1] float images) or an ``(x, y)`` pair;
    ``context`` carries the transfer source model and the AutoAttack state hook.

    Under a process group of W ranks (``torchrun``) rank r evaluates global batches r, r + W, ... of
    every attack (:func:`~advbench.engine.shards.shard_batches`), keeping its own resume files
    (:func:`~advbench.engine.shards.shard_paths`); rank 0 gathers the per-batch results, merges them in
    batch order and alone writes ``out_file``. The merged per-sample results equal those of one process.
    Every rank returns the result.
    """
    stop = stop or StopFlag()
    out_file = Path(out_file)
    rank, world = distributed.rank(), distributed.world_size()
    partial_file, state_dir = shard_paths(out_file, rank, world)
    data = as_eval_data(split)
    n = min(job.n_eval, len(data))
    state = load_state(out_file, partial_file, job.fingerprint(), rank, world)
    model = model.to(device)
    if (job.hygiene or world > 1) and "digest_before" not in state:
        state["digest_before"] = hygiene.model_digest(model)
    if job.adapt:
        job = _plan_adaptation(model, data, n, job, state, device)
    todo: Todo = [("clean", None, job.threats[0], n)]
    todo += [(k, e, t, min(n, e.subset or n)) for k, e, t in job.entries()]
    shard = _ShardPass(model, data.x[:n], data.y[:n], job, state, device, partial_file, state_dir,
                       context or AttackContext(), progress or NullProgress(), stop, batch_hook, ShardSync(world),
                       rank, world, state.get("clean_verdict_samples", 1))
    interrupted = shard.run(todo)
    if not interrupted and rank == 0 and job.hygiene and "probe" not in state:
        state["probe"] = _probe(model, data, n, job, device)
    if not interrupted and rank == 0 and job.adaptive and "adapted_large_eps" not in state:
        k = min(n, adapt.ADAPTED_PROBE_N)
        xs, ys = to_model_input(data.x[:k], device), data.y[:k].to(device)
        state["adapted_large_eps"] = {e.label: adapt.adapted_large_eps(model, xs, ys, e, job.batch_size)
                                      for e in job.adaptive}
    runs.write_json(partial_file, state)  # also when this shard had no batch to run
    if not shard.sync.finish(bool(interrupted), stop):
        raise Interrupted(interrupted or f"evaluation stopped{shard.label}: this process's shard is saved")
    merged, digest_after = _gather(model, state, todo, job, world)
    result = None
    if rank == 0:
        result = assemble(job, merged, n, attack_descriptions={
            key: build_attack(e.attack, t, e.options).describe() for key, e, t in job.entries()},
            digest_after=digest_after if job.hygiene else None, world_size=world)
        runs.write_json(out_file, result)
    result = distributed.broadcast_object(result)
    remove_resume_files(out_file, partial_file, state_dir, rank, world)
    return result
