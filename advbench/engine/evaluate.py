"""The evaluation loop: clean accuracy, validation PGD, and resumable attack suites.

Suites are evaluated on the first ``n_eval`` test images in order, batch by batch. After every batch
the per-sample results so far are written atomically to ``attacks/.<suite>.partial.json``; a killed
evaluation resumes from there and gives the same per-sample result as an uninterrupted one, because
every batch's randomness comes from a generator seeded by (seed, attack, eps, batch index). Attacks
with internal progress (AutoAttack) keep per-batch state files in ``attacks/.<suite>.state/``.

Sharded (``torchrun`` or ``advbench attack --nproc N``): rank r of W evaluates global batches r, r + W,
r + 2W, ... of every attack, with its own ``.<suite>.rank<r>-of-<W>.partial.json`` and ``.state/``;
rank 0 gathers the per-batch results and writes the merged result. Since a batch is cut and seeded
by its global index alone, the merged per-sample results equal one process's. A rerun resumes each
shard from its files, and also takes the finished batches of partial files of another world size.

Every result carries hygiene checks (:mod:`advbench.engine.hygiene`): a ``checks`` block with
pass/warn/fail and the numbers behind each check.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advbench import runs
from advbench.attacks import ATTACKS, Suite, SuiteEntry, build_attack
from advbench.attacks.base import AttackContext
from advbench.attacks.pgd import pgd_perturb
from advbench.attacks.suites import DEFAULT_EPS
from advbench.config import json_safe
from advbench.core import distributed
from advbench.core.passes import frozen
from advbench.core.progress import NullProgress
from advbench.core.seeding import make_generator
from advbench.core.signals import Interrupted, StopFlag
from advbench.engine import hygiene
from advbench.threat import ThreatModel


def clean_accuracy(model: nn.Module, split: Any, n: int, batch_size: int, device: torch.device) -> float:
    """Accuracy on the first ``n`` images of ``split`` (eval mode, no grad); the model's mode is restored."""
    from advbench.data import batches

    correct = 0
    with frozen(model, "eval"), torch.no_grad():
        for x, y, _ in batches(_head(split, n), batch_size, shuffle=False, device=device):
            correct += int((model(x).argmax(1) == y).sum())
    return correct / max(1, n)


def pgd_accuracy(model: nn.Module, split: Any, n: int, batch_size: int, device: torch.device,
                 threat: ThreatModel, *, steps: int, seed: Any) -> float:
    """PGD-``steps`` accuracy (step eps/4, uniform start) on the first ``n`` images, eval mode."""
    from advbench.data import batches

    correct = 0
    with frozen(model, "eval"):
        for b, (x, y, _) in enumerate(batches(_head(split, n), batch_size, shuffle=False, device=device)):
            gen = make_generator(x.device, seed, b)
            x_adv = pgd_perturb(model, x, y, threat, steps=steps, alpha=threat.default_step(), generator=gen)
            with torch.no_grad():
                correct += int((model(x_adv).argmax(1) == y).sum())
    return correct / max(1, n)


def _head(split: Any, n: int) -> Any:
    return type(split)(split.x[:n], split.y[:n])


@dataclass
class EvalData:
    """Evaluation images (uint8 [N, C, H, W] in 0..255, or float in [0, 1]) and int64 labels [N]."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


def as_eval_data(data: Any) -> EvalData:
    """Accept a split (anything with ``.x`` and ``.y``) or an ``(x, y)`` pair of tensors."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        x, y = data.x, data.y
    x, y = torch.as_tensor(x), torch.as_tensor(y).long()
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x.shape[0]} images but {y.shape[0]} labels")
    return EvalData(x, y)


def to_model_input(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Images as the model sees them: uint8 -> float32 / 255 (as :func:`advbench.data.batches`), floats as given."""
    x = x.to(device)
    return x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x


@dataclass
class EvalJob:
    """What to evaluate: a suite at one or more threats on the first ``n_eval`` images.

    ``available`` names the optional resources the evaluation provides (``source_model`` for transfer
    attacks); entries whose attack needs a missing one are skipped and listed in the result.
    ``hygiene`` runs the model probe (large-eps PGD, zero gradients, determinism) for the checks.
    """

    suite: Suite
    threats: list[ThreatModel]
    n_eval: int
    batch_size: int = 256
    seed: int = 0
    source: dict[str, Any] | None = None  # what model was attacked (run, checkpoint, epoch)
    transfer_source: dict[str, Any] | None = None  # the model transfer attacks are crafted on
    hygiene: bool = True
    available: frozenset[str] = frozenset()
    #: digests of what is evaluated (:func:`identity_of`): the model's weights and classes, the images and
    #: labels, the transfer source's weights; part of the fingerprint, so a stored result is reused only for
    #: the same model on the same data
    identity: dict[str, Any] | None = None

    def entry_threat(self, entry: SuiteEntry, threat: ThreatModel) -> ThreatModel:
        """The entry's own threat: its fixed norm/eps, else the evaluation's (a foreign norm gets its default eps)."""
        norm = entry.norm or threat.norm
        eps = entry.eps or (threat.eps_text if norm == threat.norm else DEFAULT_EPS[norm])
        return ThreatModel.parse(eps, norm)

    def all_entries(self) -> list[tuple[str, SuiteEntry, ThreatModel]]:
        """(key, suite entry, threat) for every attack at every eps, runnable or not (no duplicates)."""
        multi = len(self.threats) > 1
        out, seen = [], set()
        for threat in self.threats:
            for e in self.suite.entries:
                t = self.entry_threat(e, threat)
                key = f"{e.label}@{t.eps_text}" if multi else e.label
                if key not in seen:
                    seen.add(key)
                    out.append((key, e, t))
        return out

    def entries(self) -> list[tuple[str, SuiteEntry, ThreatModel]]:
        """The runnable entries (their attack's needs are available)."""
        return [(k, e, t) for k, e, t in self.all_entries() if not self._missing(e)]

    def skipped(self) -> list[dict[str, Any]]:
        """Entries left out because a resource is missing, with the reason."""
        return [{"key": k, "label": e.label, "attack": e.attack, "reason": f"needs {', '.join(self._missing(e))} "
                 "(pass --source RUN)"} for k, e, _ in self.all_entries() if self._missing(e)]

    def _missing(self, entry: SuiteEntry) -> list[str]:
        return [n for n in ATTACKS.get(entry.attack).needs if n not in self.available]

    def fingerprint(self) -> str:
        """Hash of everything that decides the per-sample results (resume only matches the same job)."""
        blob = json.dumps(json_safe({
            "suite": self.suite.name,
            "entries": [(e.label, e.attack, e.options, e.norm, e.eps, e.subset) for e in self.suite.entries],
            "threats": [t.to_dict() for t in self.threats], "n": self.n_eval, "bs": self.batch_size,
            "seed": self.seed, "source": self.source, "transfer_source": self.transfer_source,
            "hygiene": self.hygiene, "available": sorted(self.available), "identity": self.identity}),
            sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def identity_of(model: nn.Module, data: Any, n_eval: int, source_model: nn.Module | None = None) -> dict[str, Any]:
    """What decides a result besides the job's settings: the model's weights and code, the first ``n_eval``
    images and labels of ``data``, and the transfer source model's weights (see :mod:`advbench.core.digest`)."""
    from advbench.core.digest import code_identity, data_digest, weights_digest

    d = as_eval_data(data)
    n = min(n_eval, len(d))
    out: dict[str, Any] = {"weights": weights_digest(model), "code": code_identity(model),
                           "data": data_digest(d.x[:n], d.y[:n])}
    if source_model is not None:
        out["source_weights"] = weights_digest(source_model)
        out["source_code"] = code_identity(source_model)
    return out


def _max_perturbation(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> float:
    flat = (x_adv - x).flatten(1)
    if flat.shape[0] == 0:
        return 0.0
    size = flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)
    return float(size.max())


def shard_paths(out_file: str | Path, rank: int = 0, world: int = 1) -> tuple[Path, Path]:
    """The resume files of one shard: (partial results JSON, AutoAttack state directory).

    One process keeps ``.<suite>.partial.json`` and ``.<suite>.state/``; rank ``r`` of ``W`` keeps
    ``.<suite>.rank<r>-of-<W>.partial.json`` and ``.<suite>.rank<r>-of-<W>.state/``.
    """
    out_file = Path(out_file)
    tag = "" if world <= 1 else f".rank{rank}-of-{world}"
    return (out_file.with_name(f".{out_file.stem}{tag}.partial.json"),
            out_file.with_name(f".{out_file.stem}{tag}.state"))


def shard_batches(n_batches: int, rank: int = 0, world: int = 1) -> list[int]:
    """The global batches a rank evaluates: ``rank, rank + W, rank + 2W, ...`` (all of them for one process).

    Batches are cut from the global sequence exactly as one process cuts them, and every batch draws its
    randomness from (seed, attack, eps, global batch index), so each batch's result does not depend on
    which rank ran it or on the number of ranks. Striding (rather than contiguous blocks) spreads slow
    batches (robust points that survive to AutoAttack's later components) evenly over the ranks.
    """
    return list(range(rank, n_batches, max(1, world)))


def _resume_files(out_file: Path, own: Path, world: int) -> list[Path]:
    """Partial files left by earlier runs of the same suite with a different number of processes."""
    stem = out_file.stem
    found = [out_file.with_name(f".{stem}.partial.json"), *out_file.parent.glob(f".{glob.escape(stem)}.rank*-of-*"
                                                                              ".partial.json")]
    same_world = f"-of-{world}.partial.json"
    return [p for p in found if p != own and p.is_file() and not (world > 1 and p.name.endswith(same_world))]


def _load_state(out_file: Path, partial_file: Path, fp: str, rank: int, world: int) -> dict[str, Any]:
    """This shard's saved progress, plus the batches it owns from partial files of another world size."""
    def read(path: Path) -> dict[str, Any]:
        try:
            prev = runs.read_json(path)
        except (OSError, json.JSONDecodeError):
            return {}
        return prev if isinstance(prev, dict) and prev.get("fingerprint") == fp else {}

    state: dict[str, Any] = read(partial_file) if partial_file.is_file() else {}
    state = state or {"fingerprint": fp, "done": {}}
    for other in _resume_files(out_file, partial_file, world):
        prev = read(other)
        for key, batches in (prev.get("done") or {}).items():
            mine = state["done"].setdefault(key, {})
            for b, rec in batches.items():
                if int(b) % world == rank:
                    mine.setdefault(b, rec)
        if rank == 0 and "probe" in prev:
            state.setdefault("probe", prev["probe"])
    return state


class _ShardSync:
    """How the ranks of a sharded evaluation agree on its end: every shard finished (``go``) or stopped.

    Shards may take very different times (one rank resumed most of its batches, or its points survive
    to AutoAttack's last components), so the ranks do not meet in a barrier that would time out after
    gloo's or NCCL's default limit; they use torchrun's key-value store instead. A rank that finished
    its shard adds itself to a counter and polls; the last one to finish sets the verdict ``go``. A rank
    that is stopped (Ctrl-C, SIGTERM from torchrun after another rank died) sets ``stop`` unless ``go``
    was set first; working ranks see the verdict between batches and stop too. Every rank obeys the one
    verdict (compare-and-set), so none waits in a collective for a rank that has left. Without
    torchrun's agent the store lives in rank 0; if it is gone, the others stop as well.
    """

    def __init__(self, world: int) -> None:
        self.world = world
        self.store: Any = None
        # a fresh key per evaluation (a store may outlive a torchrun restart): rank 0 draws it for all
        token = distributed.broadcast_object(os.urandom(8).hex() if distributed.is_main() else None)
        self.prefix = f"advbench/evaluate/{token}"
        if world > 1:
            try:
                from torch.distributed import distributed_c10d

                self.store = distributed_c10d._get_default_store()
            except (ImportError, AttributeError, RuntimeError, ValueError):
                self.store = None  # fall back to a collective at the end

    def stopped_elsewhere(self) -> bool:
        """True once another rank has stopped the evaluation (checked between batches)."""
        if self.store is None:
            return False
        try:
            return self.store.check([f"{self.prefix}/verdict"])
        except RuntimeError:  # the store's host (rank 0 without torchrun's agent) has gone: it stopped
            return True

    def _decide(self, verdict: str) -> bool:
        try:
            return self.store.compare_set(f"{self.prefix}/verdict", "", verdict).decode() == "go"
        except RuntimeError:
            return False

    def finish(self, interrupted: bool, stop: StopFlag, poll_s: float = 0.05) -> bool:
        """Whether every rank finished its shard (False: the evaluation stops on every rank)."""
        if self.world <= 1:
            return not interrupted
        if self.store is None:
            return not distributed.any_rank(interrupted)
        if interrupted:
            return self._decide("stop")
        key = f"{self.prefix}/verdict"
        try:
            if self.store.add(f"{self.prefix}/done", 1) >= self.world:
                return self._decide("go")
            while not self.store.check([key]):
                if stop.requested:
                    return self._decide("stop")
                time.sleep(poll_s)
            return self.store.get(key).decode() == "go"
        except RuntimeError:
            return False


def evaluate_suite(model: nn.Module, split: Any, job: EvalJob, out_file: str | Path, *,
                   device: torch.device, progress: NullProgress | None = None, stop: StopFlag | None = None,
                   batch_hook: Any = None, context: AttackContext | None = None) -> dict[str, Any]:
    """Run ``job`` on ``model`` and write the result JSON to ``out_file`` (resumable per batch).

    ``split`` is anything with ``.x``/``.y`` (uint8 or [0, 1] float images) or an ``(x, y)`` pair;
    ``context`` carries the transfer source model and the AutoAttack state hook.

    Under a process group of W ranks (``torchrun``) rank r evaluates global batches r, r + W, ... of
    every attack (:func:`shard_batches`), keeping its own resume files (:func:`shard_paths`); rank 0
    gathers the per-batch results, merges them in batch order and alone writes ``out_file``. The merged
    per-sample results equal those of one process. Every rank returns the result.
    """
    progress = progress or NullProgress()
    stop = stop or StopFlag()
    out_file = Path(out_file)
    rank, world = distributed.rank(), distributed.world_size()
    partial_file, state_dir = shard_paths(out_file, rank, world)
    fp = job.fingerprint()
    data = as_eval_data(split)
    n = min(job.n_eval, len(data))
    xs, ys = data.x[:n], data.y[:n]
    state = _load_state(out_file, partial_file, fp, rank, world)
    model = model.to(device)
    if (job.hygiene or world > 1) and "digest_before" not in state:
        state["digest_before"] = hygiene.model_digest(model)
    base = context or AttackContext()
    todo: list[tuple[str, SuiteEntry | None, ThreatModel, int]] = [("clean", None, job.threats[0], n)]
    todo += [(k, e, t, min(n, e.subset or n)) for k, e, t in job.entries()]
    bs = job.batch_size
    shard = "" if world == 1 else f" [rank {rank}/{world}]"
    sync = _ShardSync(world)
    interrupted = ""
    for key, entry, threat, n_e in todo:
        done = state["done"].setdefault(key, {})
        attack = None if entry is None else build_attack(
            entry.attack, threat, entry.options, dataclasses.replace(base, key=key, state_dir=state_dir))
        n_batches = math.ceil(n_e / bs)
        mine = shard_batches(n_batches, rank, world)
        handle = progress.task(f"{key}{shard}", len(mine))
        for i, b in enumerate(mine):
            if str(b) in done:
                progress.advance(handle, 1)
                continue
            x = to_model_input(xs[b * bs:min(n_e, (b + 1) * bs)], device)
            y = ys[b * bs:min(n_e, (b + 1) * bs)].to(device)
            t0 = time.perf_counter()
            if attack is None:
                with frozen(model, "eval"), torch.no_grad():
                    correct = model(x).argmax(1) == y
                record: dict[str, Any] = {"forward": x.shape[0], "backward": 0}
            else:
                attack.context.batch = b
                gen = make_generator(x.device, job.seed, key, threat.eps_text, b)
                res = attack(model, x, y, generator=gen)
                correct = res.correct
                record = {"forward": res.forward, "backward": res.backward, "per_sample": json_safe(res.per_sample),
                          "info": json_safe(res.info), "max_perturbation": _max_perturbation(res.x_adv, x, threat.norm),
                          "x_min": float(res.x_adv.min()), "x_max": float(res.x_adv.max())}
            record = {"correct": [int(c) for c in correct.tolist()], "seconds": time.perf_counter() - t0, **record}
            done[str(b)] = record
            runs.write_json(partial_file, state)
            progress.advance(handle, 1, images=x.shape[0])
            if batch_hook is not None:
                batch_hook(key, b)
            if stop.requested or sync.stopped_elsewhere():
                why = "" if stop.requested else " because another rank was stopped"
                interrupted = f"evaluation stopped{why} at {key} batch {b + 1}/{n_batches}{shard} " \
                    f"({i + 1}/{len(mine)} of this process's batches)"
                break
        progress.done(handle)
        if interrupted:
            break
    if not interrupted and rank == 0 and job.hygiene and "probe" not in state:
        k = min(n, hygiene.PROBE_N)
        state["probe"] = hygiene.probe_model(model, to_model_input(xs[:k], device), ys[:k].to(device), bs)
    runs.write_json(partial_file, state)  # also when this shard had no batch to run
    if not sync.finish(bool(interrupted), stop):
        raise Interrupted(interrupted or f"evaluation stopped{shard}: this process's shard is saved")
    digest_after = hygiene.model_digest(model) if job.hygiene or world > 1 else None
    merged = state
    if world > 1:
        shards = distributed.all_gather_objects({"done": state["done"], "digest_before": state.get("digest_before"),
                                                 "digest_after": digest_after})
        before = {s["digest_before"] for s in shards}
        if len(before) != 1:
            raise RuntimeError(f"the {world} ranks evaluated different weights (model digests {sorted(before)}); "
                               "every rank must load the same checkpoint")
        # an attack that changed the model on any rank is reported by the eval-mode check
        digest_after = next((s["digest_after"] for s in shards if s["digest_after"] != s["digest_before"]),
                            digest_after)
        merged = {**state, "done": _merge_shards([s["done"] for s in shards], todo, bs)}
    result = None
    if rank == 0:
        result = assemble(job, merged, n, attack_descriptions={
            key: build_attack(e.attack, t, e.options).describe() for key, e, t in job.entries()},
            digest_after=digest_after if job.hygiene else None, world_size=world)
        runs.write_json(out_file, result)
    result = distributed.broadcast_object(result)
    partial_file.unlink(missing_ok=True)
    shutil.rmtree(state_dir, ignore_errors=True)
    if rank == 0:  # leftovers of interrupted runs with another number of processes
        for other in _resume_files(out_file, partial_file, world):
            other.unlink(missing_ok=True)
        for d in [out_file.with_name(f".{out_file.stem}.state"),
                  *out_file.parent.glob(f".{glob.escape(out_file.stem)}.rank*-of-*.state")]:
            if not (world > 1 and d.name.endswith(f"-of-{world}.state")):
                shutil.rmtree(d, ignore_errors=True)
    return result


def _merge_shards(shards: list[dict[str, Any]], todo: list[tuple[str, Any, Any, int]], bs: int) -> dict[str, Any]:
    """Per-batch results of every rank, merged per attack in global batch order (checked complete)."""
    merged: dict[str, Any] = {}
    for key, _entry, _threat, n_e in todo:
        batches: dict[str, Any] = {}
        for done in shards:
            batches.update(done.get(key, {}))
        expected = [str(b) for b in range(math.ceil(n_e / bs))]
        missing = [b for b in expected if b not in batches]
        if missing:
            raise RuntimeError(f"sharded evaluation of {key}: batches {missing} missing after the merge")
        merged[key] = {b: batches[b] for b in expected}
    return merged


def _flat(done: dict[str, Any], field: str) -> list[Any]:
    out: list[Any] = []
    for b in sorted(done, key=int):
        v = done[b][field]
        out.extend(v if isinstance(v, list) else [v])
    return out


def _per_sample(done: dict[str, Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for b in sorted(done, key=int):
        for name, values in (done[b].get("per_sample") or {}).items():
            out.setdefault(name, []).extend(values)
    return out


def assemble(job: EvalJob, state: dict[str, Any], n: int, attack_descriptions: dict[str, Any],
             digest_after: str | None = None, world_size: int = 1) -> dict[str, Any]:
    """Build the attacks/<suite>.json record (results, worst case, checks) from the per-batch state."""
    clean = _flat(state["done"]["clean"], "correct")
    results = []
    for key, entry, threat in job.entries():
        done = state["done"][key]
        correct = _flat(done, "correct")
        m = len(correct)
        desc = attack_descriptions[key]
        per_sample = _per_sample(done)
        infos = [done[b].get("info") or {} for b in sorted(done, key=int)]
        summary = ATTACKS.get(entry.attack).summarize(per_sample, infos, correct, threat)
        rec = {
            "key": key, "label": entry.label, "attack": entry.attack, "kind": desc.get("kind", "white-box"),
            "options": desc["options"], "norm": threat.norm, "eps": threat.eps_text, "eps_float": threat.eps,
            "accuracy": sum(correct) / max(1, m), "n": m, "correct": correct,
            "seconds": sum(_flat(done, "seconds")),
            "forward_passes": sum(_flat(done, "forward")) / max(1, m),
            "backward_passes": sum(_flat(done, "backward")) / max(1, m),
            "max_perturbation": max([done[b].get("max_perturbation", 0.0) for b in done] + [0.0]),
            "x_range": [min([done[b].get("x_min", 0.0) for b in done] + [1.0]),
                        max([done[b].get("x_max", 1.0) for b in done] + [0.0])],
        }
        if entry.subset is not None:
            rec["subset"] = f"first {m} of the {n} evaluated images"
        if per_sample:
            rec["per_sample"] = per_sample
        if summary:
            rec["summary"] = json_safe(summary)
        results.append(rec)
    robust = []
    budgets: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        budgets.setdefault((r["norm"], r["eps"]), []).append(r)
    for (norm, eps), members in budgets.items():
        m = min(r["n"] for r in members)
        flags = list(clean[:m])
        for r in members:
            flags = [a & b for a, b in zip(flags, r["correct"][:m], strict=True)]
        robust.append({"norm": norm, "eps": eps, "eps_float": members[0]["eps_float"],
                       "accuracy": sum(flags) / max(1, m), "n": m, "correct": flags,
                       "attacks": [r["key"] for r in members]})
    result = {
        "format": "advbench-attacks-v1",
        "suite": job.suite.name,
        "description": job.suite.description,
        "source": job.source,
        "transfer_source": job.transfer_source,
        "identity": job.identity,
        "n_eval": n,
        "subset": "first-n",
        "batch_size": job.batch_size,
        "world_size": world_size,
        "seed": job.seed,
        "threats": [t.to_dict() for t in job.threats],
        "clean": {"accuracy": sum(clean) / max(1, n), "n": n, "correct": clean},
        "clean_acc": sum(clean) / max(1, n),
        "results": results,
        "robust": robust,
        "skipped": job.skipped(),
        "fingerprint": job.fingerprint(),
        "versions": runs.package_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    result["checks"] = hygiene.run_checks(result, state.get("probe"), state.get("digest_before"), digest_after)
    return result
