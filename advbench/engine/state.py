"""What a training run writes and reads back: config.json, metrics lines, summary.json and the checkpoint
state that makes a resume exact (model, optimizer, loss scaler, the epoch's running sums, one RNG stream
and defense state per rank).

The loop (:mod:`advbench.engine.train`) decides when to write; this module decides what is written, so
the run format (docs/run-format.md) is read off one file. Functions that gather over ranks say so: under
torchrun every rank must call them, in the same order.
"""

from __future__ import annotations

import math
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from advbench import runs
from advbench.config import TrainConfig, config_to_dict, lr_factor
from advbench.core import distributed
from advbench.core.seeding import derived_seed, rng_state, seed_everything, set_rng_state
from advbench.data import DataSplits
from advbench.defenses import Defense
from advbench.threat import ThreatModel


def default_run_name(cfg: TrainConfig) -> str:
    """``<dataset>-<model>-<defense>-<norm><eps>-s<seed>`` with eps made path-safe."""
    eps = cfg.eps.replace("/", "_")
    return f"{cfg.dataset}-{cfg.model}-{cfg.defense}-{cfg.norm}-{eps}-s{cfg.seed}"


def memory_kind(device: torch.device) -> str:
    """What ``peak_mem_bytes`` measures on ``device``: ``cuda-max-allocated`` or ``cpu-peak-rss``."""
    return "cuda-max-allocated" if torch.device(device).type == "cuda" else "cpu-peak-rss"


# ---------------------------------------------------------------- config.json
def distributed_record(world: int, batch_size: int) -> dict[str, Any]:
    """World size, backend and how the ranks are kept in step (config.json)."""
    backend = dist.get_backend() if world > 1 else None
    return {"world_size": world, "backend": backend,
            "grad_sync": "all-reduce of gradients before each optimizer step, weighted by each rank's "
                         "share of the global batch" if world > 1 else None,
            "global_batch_size": batch_size}


def config_record(cfg: TrainConfig, *, threat: ThreatModel, defense: Defense, splits: DataSplits,
                  device: torch.device, world: int, runtime: dict[str, Any], command: list[str] | None
                  ) -> dict[str, Any]:
    """The content of config.json: the resolved config and everything that decided the run."""
    dist_record = distributed_record(world, cfg.batch_size)
    return {
        "format": "advbench-run-v1",
        "config": config_to_dict(cfg),
        "threat": threat.to_dict(),
        "defense": defense.describe(),
        "architecture": cfg.model,
        "dataset": splits.meta,
        "num_classes": splits.info.num_classes,
        "input_shape": list(splits.info.shape),
        "seed": cfg.seed,
        "command": shlex.join(command) if command else None,
        "versions": runs.package_versions(),
        "git": runs.git_hash(),
        "device": str(device),
        "world_size": dist_record["world_size"],
        "backend": dist_record["backend"],
        "distributed": dist_record,
        "runtime": runtime,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# ---------------------------------------------------------------- the epoch's running sums and metrics line
def accumulate(partial: dict[str, float], logs: dict[str, Any], n: int) -> None:
    """Add one step's logged scalars, weighted by its ``n`` examples, to the epoch's running sums."""
    partial["n"] = partial.get("n", 0.0) + n
    for k, v in logs.items():
        partial[f"sum_{k}"] = partial.get(f"sum_{k}", 0.0) + float(v) * n


#: training steps whose logged device tensors are read together (one host sync per interval)
LOG_EVERY = 16


def flush_logs(partial: dict[str, float], pending: list[tuple[dict[str, Any], int]]) -> None:
    """Add the held steps' logs to the running sums, in step order, and empty ``pending``.

    Logged values may be 0-dim tensors on the device: all of them are read in one transfer (as float64,
    which holds every float32/bf16/fp16 value exactly), so the sums equal those of :func:`accumulate` called
    with ``float(value)`` after every step."""
    tensors = [v for logs, _ in pending for v in logs.values() if isinstance(v, torch.Tensor)]
    host: list[float] = []
    if tensors:
        where = tensors[0].device
        host = torch.stack([t.detach().reshape(()).to(where, torch.float64) for t in tensors]).tolist()
    it = iter(host)
    for logs, n in pending:
        accumulate(partial, {k: next(it) if isinstance(v, torch.Tensor) else v for k, v in logs.items()}, n)
    pending.clear()


def record_peak(partial: dict[str, float], peak_bytes: float, extra_bytes: float) -> None:
    """Keep the epoch's largest measured memory peak (and peak above the step's starting level)."""
    partial["peak_mem_bytes"] = max(partial.get("peak_mem_bytes", 0.0), peak_bytes)
    partial["peak_mem_extra_bytes"] = max(partial.get("peak_mem_extra_bytes", 0.0), extra_bytes)


def reduce_partial(partial: dict[str, float]) -> dict[str, float]:
    """The epoch's running sums over every rank (sums add, memory peaks take the max; ``elapsed`` is rank
    0's). Collective under torchrun; a copy of ``partial`` for one process."""
    parts = distributed.all_gather_objects(dict(partial))
    out = dict(parts[0])
    for other in parts[1:]:
        for k, v in other.items():
            if k.startswith("peak_mem"):
                out[k] = max(out.get(k, 0.0), v)
            elif k == "n" or k.startswith("sum_"):
                out[k] = out.get(k, 0.0) + v
    return out


def means(partial: dict[str, float]) -> dict[str, float]:
    """Per-example means of the running sums (``sum_loss`` -> ``loss``)."""
    n = partial.get("n", 0.0)
    return {k[4:]: v / n for k, v in partial.items() if k.startswith("sum_") and n}


def epoch_record(cfg: TrainConfig, epoch: int, reduced: dict[str, float], epoch_logs: dict[str, float],
                 train_seconds: float, device: torch.device, world: int) -> dict[str, Any]:
    """The training part of an epoch's metrics line (validation is added by the caller)."""
    record: dict[str, Any] = {"epoch": epoch, "lr": cfg.lr * lr_factor(cfg, epoch + 1 - 1e-9)}
    record.update(means(reduced))
    record.update(epoch_logs)
    record["train_seconds"] = train_seconds
    if cfg.mem_every:
        peak = reduced.get("peak_mem_bytes")
        record["peak_mem_bytes"] = int(peak) if peak is not None else None
        extra = reduced.get("peak_mem_extra_bytes")
        record["peak_mem_extra_bytes"] = int(extra) if extra is not None else None
        record["peak_mem_kind"] = memory_kind(device)
    if world > 1:
        record["world_size"] = world
    return record


def epoch_line(cfg: TrainConfig, r: dict[str, Any]) -> str:
    """The one-line epoch summary shown on the console."""
    parts = [f"epoch {r['epoch'] + 1}/{cfg.epochs}", f"loss {r.get('loss', float('nan')):.4f}"]
    for key, label in (("acc", "train acc"), ("adv_acc", "train adv acc"), ("val_clean_acc", "val clean"),
                       ("val_robust_acc", f"val PGD-{cfg.val_attack_steps}")):
        if key in r:
            parts.append(f"{label} {100 * r[key]:.1f}%")
    parts.append(f"{r['train_seconds']:.1f}s")
    return "  ".join(parts)


def selection_score(rule: str, record: dict[str, Any]) -> float:
    """Score that decides ``best.pt`` under the selection rule ``rule``."""
    if rule == "last":
        return float(record["epoch"])
    if rule == "val-clean":
        return float(record.get("val_clean_acc", float("-inf")))
    return float(record.get("val_robust_acc", record.get("val_clean_acc", float("-inf"))))


# ---------------------------------------------------------------- summary.json
def chance_level(clean_acc: float | None, num_classes: int | None, n: int | None) -> dict[str, Any]:
    """Whether a clean accuracy is within noise of guessing: at most chance + 3 binomial standard errors on ``n``
    validation images (a run that learned nothing would otherwise read as a plain, robust-looking model)."""
    if clean_acc is None or not num_classes or not n:
        return {}
    chance = 1.0 / num_classes
    bound = chance + 3.0 * math.sqrt(chance * (1 - chance) / n)
    return {"chance_acc": chance, "near_chance": bool(clean_acc <= bound)}


def write_summary(run_dir: Path, cfg: TrainConfig, threat: ThreatModel, *, status: str, select: str,
                  best: dict[str, Any], world: int, device: torch.device, notes: list[str],
                  extra: dict[str, Any] | None = None, num_classes: int | None = None) -> None:
    """Atomically rewrite summary.json from metrics.jsonl and the best epoch so far (call on rank 0 only)."""
    history = runs.read_jsonl(run_dir / "metrics.jsonl")
    last = history[-1] if history else {}
    peaks = [h["peak_mem_bytes"] for h in history if h.get("peak_mem_bytes") is not None]
    summary = {
        "status": status,
        "defense": cfg.defense,
        "architecture": cfg.model,
        "dataset": cfg.dataset,
        **threat.to_dict(),
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "epochs_completed": len(history),
        "select": select,
        "best_epoch": best.get("epoch"),
        "best_val_clean_acc": best.get("val_clean_acc"),
        "best_val_robust_acc": best.get("val_robust_acc"),
        "last_val_clean_acc": last.get("val_clean_acc"),
        "last_val_robust_acc": last.get("val_robust_acc"),
        "train_seconds": sum(h.get("train_seconds", 0.0) for h in history),
        "passes_per_step": {"forward": last.get("forward_passes"), "backward": last.get("backward_passes")},
        "world_size": world,
        "peak_mem_bytes": max(peaks) if peaks else None,
        "peak_mem_kind": last.get("peak_mem_kind", memory_kind(device) if cfg.mem_every else None),
        "num_classes": num_classes,
        **chance_level(best.get("val_clean_acc"), num_classes, last.get("val_n")),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **({"notes": list(notes)} if notes else {}),
        **(extra or {}),
    }
    if summary.get("near_chance"):
        summary["notes"] = [*summary.get("notes", []), f"near chance: best validation clean accuracy "
                            f"{100 * best['val_clean_acc']:.1f}% on {num_classes} classes (chance "
                            f"{100 / num_classes:.1f}%): the model learned (almost) nothing; train longer or "
                            "use the defense's recipe"]
    runs.write_json(run_dir / "summary.json", summary)


# ---------------------------------------------------------------- checkpoint state (exact resume)
def _rank_state(model: nn.Module, defense: Defense, world: int) -> dict[str, Any]:
    """What differs between ranks: RNG streams, per-rank defense state and BN running statistics."""
    return {"rng": rng_state(), "defense_state": defense.state_dict(),
            "buffers": {k: v.detach().cpu().clone() for k, v in model.named_buffers() if v.is_floating_point()}
            if world > 1 else {}}


def checkpoint_state(model: nn.Module, optimizer: Any, scaler: Any, defense: Defense, *, epoch: int, batch: int,
                     best: dict[str, Any], partial: dict[str, float], world: int) -> dict[str, Any]:
    """Everything needed to continue exactly from (epoch, batch). Collective under torchrun (every rank
    calls it; the per-rank RNG and defense states of ranks 1.. are gathered into ``ranks``)."""
    states = distributed.all_gather_objects(_rank_state(model, defense, world))
    return {
        "format": runs.CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "batch": batch,
        "rng": states[0]["rng"],
        "best": dict(best),
        "partial": reduce_partial(partial),
        "defense_state": states[0]["defense_state"],
        "scaler": scaler.state_dict() if scaler is not None else {},
        "world_size": world,
        "ranks": [{k: v for k, v in st.items()} for st in states[1:]],
    }


@dataclass
class Resumed:
    """Where a restored run continues: its position, best epoch, running sums and a note for summary.json."""

    epoch: int
    batch: int
    best: dict[str, Any]
    partial: dict[str, float]
    notes: list[str] = field(default_factory=list)


def restore_state(ckpt: dict[str, Any], model: nn.Module, optimizer: Any, scaler: Any, defense: Defense, *,
                  rank: int, world: int, seed: int) -> Resumed:
    """Load a ``last.pt`` written by :func:`checkpoint_state` (each rank takes its own RNG stream)."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    out = Resumed(int(ckpt["epoch"]), int(ckpt["batch"]), dict(ckpt["best"]),
                  dict(ckpt.get("partial", {})) if rank == 0 else {})
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    saved_world = int(ckpt.get("world_size", 1))
    others = ckpt.get("ranks", [])
    if rank == 0:
        defense.load_state_dict(ckpt.get("defense_state", {}))
        set_rng_state(ckpt["rng"])
    elif rank - 1 < len(others):
        mine = others[rank - 1]
        defense.load_state_dict(mine.get("defense_state", {}))
        set_rng_state(mine["rng"])
        with torch.no_grad():
            named = dict(model.named_buffers())
            for k, v in mine.get("buffers", {}).items():
                if k in named:
                    named[k].copy_(v)
    else:  # a rank the saved run did not have: rank 0's defense state, a fresh stream of its own
        defense.load_state_dict(ckpt.get("defense_state", {}))
        seed_everything(derived_seed(seed, "rank", rank, "resume", out.epoch, out.batch))
    if saved_world != world:
        out.notes.append(f"resumed with {world} process(es) from a checkpoint written by {saved_world}: "
                         "data order and schedule are unchanged, per-rank random streams (attack starts) differ "
                         "from an uninterrupted run")
    return out
