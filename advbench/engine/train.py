"""The training loop: epochs, per-iteration LR schedule, validation, checkpoints, exact resume.

Order of writes at the end of an epoch (each atomic): metrics line, ``best.pt`` (if improved),
``last.pt``, ``summary.json``. A crash at any point leaves a run that resumes to the same result.

Distributed (torchrun, docs/scaling.md): every rank runs this loop on its contiguous part of each
global batch (``cfg.batch_size`` is the global batch, so steps per epoch and the LR schedule match
one process); gradients are averaged in :class:`~advbench.core.optim.SyncedOptimizer`; metrics and
memory peaks are reduced over ranks; validation runs on rank 0 and its result is broadcast; rank 0
alone writes the run directory; a stop request on any rank stops every rank at the same batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from advbench import runs
from advbench.config import TrainConfig, config_to_dict, lr_factor
from advbench.core import distributed
from advbench.core.devices import resolve_device
from advbench.core.memory import PeakMemory
from advbench.core.optim import SyncedOptimizer, average_buffers, broadcast_module
from advbench.core.passes import PassCounter
from advbench.core.progress import NullProgress
from advbench.core.seeding import derived_seed, rng_state, seed_everything, set_rng_state
from advbench.core.signals import Interrupted, StopFlag
from advbench.data import DataSplits, batches, load_splits, num_batches
from advbench.defenses import StepContext, build_defense
from advbench.engine.evaluate import clean_accuracy, pgd_accuracy
from advbench.errors import UserError
from advbench.models import build_model, enable_grad_checkpointing
from advbench.threat import ThreatModel

#: called after every training batch with (epoch, batch); tests use it to simulate an interrupt
BatchHook = Callable[[int, int], None]


def default_run_name(cfg: TrainConfig) -> str:
    """``<dataset>-<model>-<defense>-<norm><eps>-s<seed>`` with eps made path-safe."""
    eps = cfg.eps.replace("/", "_")
    return f"{cfg.dataset}-{cfg.model}-{cfg.defense}-{cfg.norm}-{eps}-s{cfg.seed}"


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov) or Adam with weight decay on all parameters."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)


def model_for(cfg: TrainConfig, splits_info: Any) -> nn.Module:
    """Build the configured model for a dataset (normalisation inside)."""
    c, h, _w = splits_info.shape
    return build_model(cfg.model, num_classes=splits_info.num_classes, in_channels=c, input_size=h,
                       mean=splits_info.mean, std=splits_info.std, options=cfg.model_options)


def load_init_weights(model: nn.Module, source: str) -> str:
    """Load weights from a run directory (its best checkpoint) or a checkpoint file; return the file used."""
    p = Path(source)
    if runs.is_run_dir(p):
        cand = p / "checkpoints" / "best.pt"
        p = cand if cand.is_file() else p / "checkpoints" / "last.pt"
    ckpt = runs.load_checkpoint(p)
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else ckpt
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise UserError(f"--init-from {source}: weights do not fit the model ({first})") from None
    return str(p)


class Trainer:
    """Trains one run; see :func:`advbench.api.train` for the public entry point.

    Under ``torchrun`` every rank builds a Trainer; rank 0 alone writes to the run directory (see
    :mod:`advbench.core.optim` for how the ranks stay in step without a DDP wrapper).
    """

    def __init__(self, cfg: TrainConfig, run_dir: Path, *, progress: NullProgress | None = None,
                 stop: StopFlag | None = None, batch_hook: BatchHook | None = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.is_main = self.rank == 0
        self.progress = (progress or NullProgress()) if self.is_main else NullProgress()
        self.stop = stop or StopFlag()
        self.batch_hook = batch_hook
        self.threat = ThreatModel.parse(cfg.eps, cfg.norm)
        self.defense = build_defense(cfg.defense, self.threat, cfg.defense_options)
        self.device = training_device(cfg)
        check_runtime(cfg, self.device, self.world)
        fetch_first = cfg.download and self.world > 1  # rank 0 downloads; the others read what it fetched
        if fetch_first and not self.is_main:
            distributed.barrier()
        self.splits: DataSplits = load_splits(
            cfg.dataset, data_dir=cfg.data_dir, download=cfg.download, n_train=cfg.n_train,
            val_size=cfg.val_size, split_seed=cfg.split_seed, options=cfg.dataset_options)
        if fetch_first and self.is_main:
            distributed.barrier()
        seed_everything(cfg.seed)
        self.model = model_for(cfg, self.splits.info).to(self.device)
        self.runtime = self._setup_runtime()
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.amp == "fp16" else None
        self.optimizer = SyncedOptimizer(build_optimizer(cfg, self.model), scaler=self.scaler, sync=self.world > 1)
        if self.rank > 0:  # attack / augmentation randomness differs per rank; rank 0 keeps the 1-process stream
            seed_everything(derived_seed(cfg.seed, "rank", self.rank))
        self.steps_per_epoch = num_batches(len(self.splits.train), cfg.batch_size)
        if cfg.max_batches_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_batches_per_epoch)
        self.start_epoch = 0
        self.start_batch = 0
        self.best: dict[str, Any] = {"epoch": None, "score": float("-inf")}
        self.partial: dict[str, float] = {}
        self.restored = False
        self.notes: list[str] = []
        self._steps_run = 0

    # ---------------------------------------------------------------- runtime (speed flags)
    def _setup_runtime(self) -> dict[str, Any]:
        """Apply grad checkpointing, SyncBN, channels_last, compile, cudnn and data placement; return the
        resolved settings recorded in config.json."""
        cfg, dev = self.cfg, self.device
        cuda = dev.type == "cuda"
        if cfg.grad_checkpointing:
            enable_grad_checkpointing(self.model, cfg.model)
        sync_bn = bool(cfg.sync_bn and self.world > 1 and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                                               for m in self.model.modules()))
        if sync_bn:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if cfg.compile:
            net = getattr(self.model, "net", self.model)  # the wrapper stays eager: pass-counting hooks live there
            net.compile(backend=cfg.compile_backend)
        benchmark = bool(cuda if cfg.cudnn_benchmark is None else cfg.cudnn_benchmark) and cuda
        if cuda:
            torch.backends.cudnn.benchmark = benchmark
        train = self.splits.train
        nbytes = train.x.element_size() * train.x.nelement()
        on_device = bool(cuda and (nbytes < DATA_ON_DEVICE_MAX if cfg.data_on_device is None else cfg.data_on_device))
        if on_device:
            self.splits.train = type(train)(train.x.to(dev), train.y.to(dev))
        self.pin_memory = bool(cuda and not on_device and (cfg.pin_memory is None or cfg.pin_memory))
        return {
            "amp": cfg.amp,
            "autocast_dtype": None if cfg.amp == "off" else cfg.amp,
            "grad_scaler": cfg.amp == "fp16",
            "channels_last": cfg.channels_last,
            "compile": cfg.compile,
            "compile_backend": cfg.compile_backend if cfg.compile else None,
            "cudnn_benchmark": benchmark,
            "grad_checkpointing": cfg.grad_checkpointing,
            "sync_bn": sync_bn,
            "data": {"storage": "in-memory tensors", "train_on_device": on_device or not cuda,
                     "pin_memory": self.pin_memory, "non_blocking_copies": self.pin_memory, "loader_workers": 0},
            "memory": {"kind": memory_kind(dev), "every": cfg.mem_every},
        }

    def distributed_record(self) -> dict[str, Any]:
        """World size, backend and how the ranks are kept in step (config.json)."""
        backend = dist.get_backend() if self.world > 1 else None
        return {"world_size": self.world, "backend": backend,
                "grad_sync": "all-reduce of gradients before each optimizer step, weighted by each rank's "
                             "share of the global batch" if self.world > 1 else None,
                "global_batch_size": self.cfg.batch_size}

    # ---------------------------------------------------------------- files
    def config_record(self, command: list[str] | None) -> dict[str, Any]:
        """The content of config.json."""
        dist_record = self.distributed_record()
        return {
            "format": "advbench-run-v1",
            "config": config_to_dict(self.cfg),
            "threat": self.threat.to_dict(),
            "defense": self.defense.describe(),
            "architecture": self.cfg.model,
            "dataset": self.splits.meta,
            "num_classes": self.splits.info.num_classes,
            "input_shape": list(self.splits.info.shape),
            "seed": self.cfg.seed,
            "command": shlex.join(command) if command else None,
            "versions": runs.package_versions(),
            "git": runs.git_hash(),
            "device": str(self.device),
            "world_size": dist_record["world_size"],
            "backend": dist_record["backend"],
            "distributed": dist_record,
            "runtime": self.runtime,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def _rank_state(self) -> dict[str, Any]:
        """What differs between ranks: RNG streams, per-rank defense state and BN running statistics."""
        return {"rng": rng_state(), "defense_state": self.defense.state_dict(),
                "buffers": {k: v.detach().cpu().clone() for k, v in self.model.named_buffers() if v.is_floating_point()}
                if self.world > 1 else {}}

    def checkpoint_state(self, epoch: int, batch: int) -> dict[str, Any]:
        """Everything needed to continue exactly from (epoch, batch). Collective under torchrun (every rank
        calls it; the per-rank RNG and defense states of ranks 1.. are gathered into ``ranks``)."""
        states = distributed.all_gather_objects(self._rank_state())
        return {
            "format": runs.CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "batch": batch,
            "rng": states[0]["rng"],
            "best": dict(self.best),
            "partial": self._reduced_partial(),
            "defense_state": states[0]["defense_state"],
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "world_size": self.world,
            "ranks": [{k: v for k, v in st.items()} for st in states[1:]],
        }

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Load a ``last.pt`` produced by :meth:`checkpoint_state` (each rank takes its own RNG stream)."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.start_epoch, self.start_batch = int(ckpt["epoch"]), int(ckpt["batch"])
        self.best = dict(ckpt["best"])
        self.partial = dict(ckpt.get("partial", {})) if self.is_main else {}
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        saved_world = int(ckpt.get("world_size", 1))
        others = ckpt.get("ranks", [])
        if self.rank == 0:
            self.defense.load_state_dict(ckpt.get("defense_state", {}))
            set_rng_state(ckpt["rng"])
        elif self.rank - 1 < len(others):
            mine = others[self.rank - 1]
            self.defense.load_state_dict(mine.get("defense_state", {}))
            set_rng_state(mine["rng"])
            with torch.no_grad():
                named = dict(self.model.named_buffers())
                for k, v in mine.get("buffers", {}).items():
                    if k in named:
                        named[k].copy_(v)
        else:  # a rank the saved run did not have: rank 0's defense state, a fresh stream of its own
            self.defense.load_state_dict(ckpt.get("defense_state", {}))
            seed_everything(derived_seed(self.cfg.seed, "rank", self.rank, "resume", self.start_epoch,
                                         self.start_batch))
        if saved_world != self.world:
            self.notes.append(f"resumed with {self.world} process(es) from a checkpoint written by {saved_world}: "
                              "data order and schedule are unchanged, per-rank random streams (attack starts) differ "
                              "from an uninterrupted run")
        self.restored = True

    def write_summary(self, status: str, extra: dict[str, Any] | None = None) -> None:
        """Atomically rewrite summary.json (rank 0 only)."""
        if not self.is_main:
            return
        history = runs.read_jsonl(self.run_dir / "metrics.jsonl")
        last = history[-1] if history else {}
        peaks = [h["peak_mem_bytes"] for h in history if h.get("peak_mem_bytes") is not None]
        summary = {
            "status": status,
            "defense": self.cfg.defense,
            "architecture": self.cfg.model,
            "dataset": self.cfg.dataset,
            **self.threat.to_dict(),
            "seed": self.cfg.seed,
            "epochs": self.cfg.epochs,
            "epochs_completed": len(history),
            "select": self.select_rule,
            "best_epoch": self.best.get("epoch"),
            "best_val_clean_acc": self.best.get("val_clean_acc"),
            "best_val_robust_acc": self.best.get("val_robust_acc"),
            "last_val_clean_acc": last.get("val_clean_acc"),
            "last_val_robust_acc": last.get("val_robust_acc"),
            "train_seconds": sum(h.get("train_seconds", 0.0) for h in history),
            "passes_per_step": {"forward": last.get("forward_passes"), "backward": last.get("backward_passes")},
            "world_size": self.world,
            "peak_mem_bytes": max(peaks) if peaks else None,
            "peak_mem_kind": last.get("peak_mem_kind", memory_kind(self.device) if self.cfg.mem_every else None),
            **({"notes": list(self.notes)} if self.notes else {}),
            **(extra or {}),
        }
        runs.write_json(self.run_dir / "summary.json", summary)

    # ---------------------------------------------------------------- loop
    def validate(self, epoch: int) -> dict[str, float]:
        """Clean and PGD accuracy on the validation split (or the test split for ``select=test-robust``)."""
        cfg = self.cfg
        split = self.splits.test if cfg.select == "test-robust" else self.splits.val
        n = min(cfg.val_n, len(split))
        if n == 0:
            return {}
        t0 = time.perf_counter()
        clean = clean_accuracy(self.model, split, n, cfg.batch_size, self.device)
        out = {"val_clean_acc": clean}
        if cfg.val_attack_steps > 0:
            gen_seed = (cfg.seed, "val", epoch)
            out["val_robust_acc"] = pgd_accuracy(self.model, split, n, cfg.batch_size, self.device, self.threat,
                                                 steps=cfg.val_attack_steps, seed=gen_seed)
        out["val_seconds"] = time.perf_counter() - t0
        out["val_split"] = "test" if cfg.select == "test-robust" else "val"  # type: ignore[assignment]
        out["val_n"] = n
        return out

    @property
    def select_rule(self) -> str:
        """The checkpoint-selection rule; ``auto`` = clean validation accuracy for standard training (its
        most robust epoch is the untrained one), validation robust accuracy for every defense."""
        if self.cfg.select == "auto":
            return "val-clean" if self.cfg.defense == "standard" else "val-robust"
        return self.cfg.select

    def selection_score(self, record: dict[str, Any]) -> float:
        """Score that decides ``best.pt`` under the configured selection rule."""
        rule = self.select_rule
        if rule == "last":
            return float(record["epoch"])
        if rule == "val-clean":
            return float(record.get("val_clean_acc", float("-inf")))
        return float(record.get("val_robust_acc", record.get("val_clean_acc", float("-inf"))))

    def run(self) -> dict[str, Any]:
        """Train from ``start_epoch``/``start_batch`` to the end; return the summary."""
        cfg = self.cfg
        if not self.restored:
            broadcast_module(self.model)  # every rank starts from rank 0's weights
        for note in self.notes:
            self.progress.log(f"note: {note}")
        with PassCounter(self.model) as counter:
            for epoch in range(self.start_epoch, cfg.epochs):
                self.run_epoch(epoch, counter)
        self.write_summary("completed")
        summary = runs.read_json(self.run_dir / "summary.json") if self.is_main else None
        return distributed.broadcast_object(summary)

    def run_epoch(self, epoch: int, counter: PassCounter) -> None:
        """One epoch of training, then validation and checkpoints."""
        cfg = self.cfg
        first = self.start_batch if epoch == self.start_epoch else 0
        epoch_logs = self.defense.on_epoch_start(epoch, self.model)  # idempotent: also on a mid-epoch resume
        if first == 0:
            self.partial = {}
        self.model.train()
        handle = self.progress.task(f"epoch {epoch + 1}/{cfg.epochs}", self.steps_per_epoch)
        if first:
            self.progress.advance(handle, first)
        t0 = time.perf_counter()
        n_train = len(self.splits.train)
        shard = (self.rank, self.world) if self.world > 1 else None
        for b, (x, y, idx) in enumerate(
            batches(self.splits.train, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch, start_batch=first,
                    augment=self.splits.info.augment, device=self.device, shard=shard, pin_memory=self.pin_memory),
                start=first):
            if b >= self.steps_per_epoch:
                break
            n_global = min(cfg.batch_size, n_train - b * cfg.batch_size)
            if n_global >= self.world:  # a final batch with fewer examples than ranks is skipped (DDP only)
                self.train_step(epoch, b, x, y, idx, n_global, counter)
            self.progress.advance(handle, 1, images=n_global)
            if self.batch_hook is not None:
                self.batch_hook(epoch, b)
            if b + 1 < self.steps_per_epoch and distributed.any_rank(self.stop.requested):
                self.partial["elapsed"] = self.partial.get("elapsed", 0.0) + time.perf_counter() - t0
                self.defense.sync_ranks()
                state = self.checkpoint_state(epoch, b + 1)
                if self.is_main:
                    runs.save_checkpoint(self.run_dir / "checkpoints" / "last.pt", state)
                self.write_summary("interrupted")
                self.progress.done(handle)
                raise Interrupted(f"stopped at epoch {epoch + 1} batch {b + 1}", str(self.run_dir))
        self.progress.done(handle)
        self.defense.sync_ranks()
        average_buffers(self.model)  # BN running statistics: the mean over ranks (identical afterwards)
        train_seconds = self.partial.get("elapsed", 0.0) + time.perf_counter() - t0
        reduced = self._reduced_partial()
        record: dict[str, Any] = {"epoch": epoch, "lr": cfg.lr * lr_factor(cfg, epoch + 1 - 1e-9)}
        record.update(_means(reduced))
        record.update(epoch_logs)
        record["train_seconds"] = train_seconds
        if cfg.mem_every:
            peak = reduced.get("peak_mem_bytes")
            record["peak_mem_bytes"] = int(peak) if peak is not None else None
            extra = reduced.get("peak_mem_extra_bytes")
            record["peak_mem_extra_bytes"] = int(extra) if extra is not None else None
            record["peak_mem_kind"] = memory_kind(self.device)
        if self.world > 1:
            record["world_size"] = self.world
        # validation on rank 0 (the others wait); every rank gets the record so all agree on "best"
        record.update(distributed.broadcast_object(self.validate(epoch) if self.is_main else None) or {})
        if self.is_main:
            runs.append_jsonl(self.run_dir / "metrics.jsonl", record)
        score = self.selection_score(record)
        if score >= self.best["score"] or self.best["epoch"] is None:
            self.best = {"epoch": epoch, "score": score, "val_clean_acc": record.get("val_clean_acc"),
                         "val_robust_acc": record.get("val_robust_acc")}
            if self.is_main:
                runs.save_checkpoint(self.run_dir / "checkpoints" / "best.pt",
                                     {"format": runs.CHECKPOINT_FORMAT, "model": self.model.state_dict(),
                                      "epoch": epoch, "select": self.select_rule, "score": score})
        self.partial = {}
        state = self.checkpoint_state(epoch + 1, 0)
        if self.is_main:
            runs.save_checkpoint(self.run_dir / "checkpoints" / "last.pt", state)
        stopping = distributed.any_rank(self.stop.requested) and epoch + 1 < cfg.epochs
        self.write_summary("completed" if epoch + 1 >= cfg.epochs else "interrupted" if stopping else "running")
        self.progress.log(self._epoch_line(record))
        if stopping:
            raise Interrupted(f"stopped after epoch {epoch + 1}", str(self.run_dir))

    def train_step(self, epoch: int, b: int, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, n_global: int,
                   counter: PassCounter) -> None:
        """One defense step on this rank's part of global batch ``b`` (AMP, memory recording, pass counting)."""
        cfg = self.cfg
        ctx = StepContext(epoch=epoch, step=b, steps_per_epoch=self.steps_per_epoch, epochs=cfg.epochs,
                          num_classes=self.splits.info.num_classes, idx=idx, optim=self.optimizer)
        lr = cfg.lr * lr_factor(cfg, ctx.progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if cfg.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        n = x.shape[0]
        self.optimizer.weight = n / n_global
        counter.reset()
        measure = cfg.mem_every > 0 and b % cfg.mem_every == 0
        with PeakMemory(self.device) if measure else contextlib.nullcontext() as mem, self._autocast():
            try:
                logs = self.defense.train_step(self.model, self.optimizer, x, y, ctx)  # type: ignore[arg-type]
            except Exception as err:
                if cfg.compile and self._steps_run == 0:
                    raise UserError(compile_failure(cfg.defense, err)) from err
                raise
        self._steps_run += 1
        logs["forward_passes"] = counter.forward / n
        logs["backward_passes"] = counter.backward / n
        self._accumulate(logs, n)
        if mem is not None and mem.peak_bytes is not None:
            self.partial["peak_mem_bytes"] = max(self.partial.get("peak_mem_bytes", 0.0), float(mem.peak_bytes))
            self.partial["peak_mem_extra_bytes"] = max(self.partial.get("peak_mem_extra_bytes", 0.0),
                                                       float(mem.extra_bytes or 0))

    def _autocast(self) -> Any:
        """Autocast for the training step (``amp``); a null context when AMP is off."""
        if self.cfg.amp == "off":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _accumulate(self, logs: dict[str, float], n: int) -> None:
        self.partial["n"] = self.partial.get("n", 0.0) + n
        for k, v in logs.items():
            self.partial[f"sum_{k}"] = self.partial.get(f"sum_{k}", 0.0) + float(v) * n

    def _reduced_partial(self) -> dict[str, float]:
        """The epoch's running sums over every rank (sums add, memory peaks take the max; ``elapsed`` is rank
        0's). Collective under torchrun; a copy of ``partial`` for one process."""
        parts = distributed.all_gather_objects(dict(self.partial))
        out = dict(parts[0])
        for other in parts[1:]:
            for k, v in other.items():
                if k.startswith("peak_mem"):
                    out[k] = max(out.get(k, 0.0), v)
                elif k == "n" or k.startswith("sum_"):
                    out[k] = out.get(k, 0.0) + v
        return out

    def _means(self) -> dict[str, float]:
        return _means(self.partial)

    def _epoch_line(self, r: dict[str, Any]) -> str:
        parts = [f"epoch {r['epoch'] + 1}/{self.cfg.epochs}", f"loss {r.get('loss', float('nan')):.4f}"]
        for key, label in (("acc", "train acc"), ("adv_acc", "train adv acc"), ("val_clean_acc", "val clean"),
                           ("val_robust_acc", f"val PGD-{self.cfg.val_attack_steps}")):
            if key in r:
                parts.append(f"{label} {100 * r[key]:.1f}%")
        parts.append(f"{r['train_seconds']:.1f}s")
        return "  ".join(parts)


def _means(partial: dict[str, float]) -> dict[str, float]:
    n = partial.get("n", 0.0)
    return {k[4:]: v / n for k, v in partial.items() if k.startswith("sum_") and n}


#: the uint8 train split is kept on the GPU (no host-to-device copies) below this size unless told otherwise
DATA_ON_DEVICE_MAX = 4 * 2**30


def memory_kind(device: torch.device) -> str:
    """What ``peak_mem_bytes`` measures on ``device``: ``cuda-max-allocated`` or ``cpu-peak-rss``."""
    return "cuda-max-allocated" if torch.device(device).type == "cuda" else "cpu-peak-rss"


def training_device(cfg: TrainConfig) -> torch.device:
    """The configured device; under torchrun on CUDA each rank takes GPU ``LOCAL_RANK`` (unless an index is given)."""
    dev = resolve_device(cfg.device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", distributed.local_rank() if distributed.env_world_size() > 1 else
                           torch.cuda.current_device())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dev


def check_runtime(cfg: TrainConfig, device: torch.device, world: int) -> None:
    """One-line UserErrors for speed / distributed settings the device cannot honour."""
    if cfg.amp != "off" and device.type not in ("cuda", "cpu"):
        raise UserError(f"--amp {cfg.amp} needs a CUDA or CPU device, got {device}; use --amp off")
    if cfg.amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("--amp bf16: this GPU does not support bfloat16; use --amp fp16 or off")
    if cfg.sync_bn and device.type != "cuda":
        raise UserError("--sync-bn needs CUDA (PyTorch's SyncBatchNorm runs on GPUs only); on CPU drop it: "
                        "BatchNorm statistics are then averaged across ranks at every epoch end")
    if world > 1 and cfg.batch_size < world:
        raise UserError(f"--batch-size {cfg.batch_size} is the global batch and must be at least the number of "
                        f"processes ({world})")


def compile_failure(defense: str, err: BaseException) -> str:
    """The one-line error for a first step that fails under ``--compile``."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return (f"--compile: the first training step of '{defense}' failed under torch.compile ({type(err).__name__}: "
            f"{first}); torch.compile does not support double backward (soar, foar, grad-reg, cure, llr, h-sat) "
            "and needs a working C++ compiler for the inductor backend; run without --compile")


def _dist_device_backend(cfg: TrainConfig) -> tuple[torch.device, str | None]:
    dev = resolve_device(cfg.device)
    return dev, None if cfg.dist_backend == "auto" else cfg.dist_backend


def start_run(cfg: TrainConfig, *, out: str | Path = "runs", name: str | None = None,
              command: list[str] | None = None, progress: NullProgress | None = None, stop: StopFlag | None = None,
              batch_hook: BatchHook | None = None) -> tuple[Path, dict[str, Any]]:
    """Create a new run directory, write config.json and train; returns (run_dir, summary).

    Under torchrun (WORLD_SIZE > 1) this joins the process group; rank 0 picks and creates the run
    directory and is the only rank that writes to it."""
    dev, backend = _dist_device_backend(cfg)
    if dev.type == "cuda" and distributed.env_world_size() > 1:
        torch.cuda.set_device(distributed.local_rank())
    with distributed.process_group(dev, backend):
        main = distributed.is_main()
        run_name = runs.check_run_name(default_run_name(cfg) if name is None else name)
        if main:
            runs.check_out_dir(out)
        trainer = Trainer(cfg, Path(out) / run_name, progress=progress, stop=stop, batch_hook=batch_hook)
        if cfg.init_from:
            trainer.init_file = load_init_weights(trainer.model, cfg.init_from)
        # rank 0 creates the folder atomically (a taken name gets a -N suffix) and tells the others
        run_dir = Path(distributed.broadcast_object(str(runs.create_run_dir(out, run_name)) if main else None))
        trainer.run_dir = run_dir
        with runs.RunLock(run_dir, "train") if main else contextlib.nullcontext():
            if main:
                record = trainer.config_record(command if command is not None else sys.argv)
                if cfg.init_from:
                    record["init_from"] = trainer.init_file
                runs.write_json(run_dir / "config.json", record)
                trainer.write_summary("running")
            return run_dir, trainer.run()


def resume_run(run_dir: str | Path, *, progress: NullProgress | None = None, stop: StopFlag | None = None,
               batch_hook: BatchHook | None = None, epochs: int | None = None) -> tuple[Path, dict[str, Any]]:
    """Continue a run from ``checkpoints/last.pt`` exactly where it stopped (``epochs`` may extend it).

    Works the same under torchrun: every rank loads ``last.pt`` and takes its own RNG stream from it; a
    different number of processes than the run was saved with is allowed (noted in summary.json)."""
    run_dir = runs.resolve_run(run_dir)
    record = runs.read_json(run_dir / "config.json")
    cfg = TrainConfig(**record["config"])
    if epochs is not None:
        cfg = dataclasses.replace(cfg, epochs=epochs)
    last = run_dir / "checkpoints" / "last.pt"
    dev, backend = _dist_device_backend(cfg)
    if dev.type == "cuda" and distributed.env_world_size() > 1:
        torch.cuda.set_device(distributed.local_rank())
    with distributed.process_group(dev, backend):
        main = distributed.is_main()
        with runs.RunLock(run_dir, "train") if main else contextlib.nullcontext():
            trainer = Trainer(cfg, run_dir, progress=progress, stop=stop, batch_hook=batch_hook)
            if last.is_file():
                trainer.restore(runs.load_checkpoint(last, map_location=trainer.device))
            elif cfg.init_from:
                load_init_weights(trainer.model, cfg.init_from)
            if main:
                # forget metric lines of epochs that will be redone (written before a crash)
                history = [h for h in runs.read_jsonl(run_dir / "metrics.jsonl") if h["epoch"] < trainer.start_epoch]
                with runs.atomic_path(run_dir / "metrics.jsonl") as tmp:
                    tmp.write_text("".join(json.dumps(h) + "\n" for h in history))
                if epochs is not None:
                    record["config"]["epochs"] = epochs
                    runs.write_json(run_dir / "config.json", record)
            if trainer.start_epoch >= cfg.epochs:
                trainer.write_summary("completed")
                summary = runs.read_json(run_dir / "summary.json") if main else None
                return run_dir, distributed.broadcast_object(summary)
            return run_dir, trainer.run()


def load_run_model(run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu"
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a run's model from config.json and load ``best`` or ``last`` weights (eval mode)."""
    from advbench.data import dataset_info

    run_dir = runs.resolve_run(run_dir)
    record = runs.read_json(run_dir / "config.json")
    cfg = TrainConfig(**record["config"])
    info = dataset_info(cfg.dataset, cfg.dataset_options)
    c, h, _ = record.get("input_shape", info.shape)
    model = build_model(cfg.model, num_classes=record.get("num_classes", info.num_classes), in_channels=c,
                        input_size=h, mean=info.mean, std=info.std, options=cfg.model_options)
    path = Path(checkpoint) if checkpoint not in {"best", "last"} else run_dir / "checkpoints" / f"{checkpoint}.pt"
    if not path.is_file():
        raise UserError(f"no {checkpoint} checkpoint in {run_dir}; train it first or pass --checkpoint last")
    ckpt = runs.load_checkpoint(path, map_location=device)
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    return model, record
