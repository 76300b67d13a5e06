"""The training loop: epochs, per-iteration LR schedule, validation, checkpoints, exact resume.

Order of writes at the end of an epoch (each atomic): metrics line, ``best.pt`` (if improved),
``last.pt``, ``summary.json``. A crash at any point leaves a run that resumes to the same result.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advbench import runs
from advbench.config import TrainConfig, config_to_dict, lr_factor
from advbench.data import DataSplits, batches, load_splits, num_batches
from advbench.defenses import StepContext, build_defense
from advbench.engine.common import resolve_device, rng_state, seed_everything, set_rng_state
from advbench.engine.evaluate import clean_accuracy, pgd_accuracy
from advbench.engine.passes import PassCounter
from advbench.engine.progress import NullProgress
from advbench.engine.signals import Interrupted, StopFlag
from advbench.errors import UserError
from advbench.models import build_model
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
    """Trains one run; see :func:`advbench.api.train` for the public entry point."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, *, progress: NullProgress | None = None,
                 stop: StopFlag | None = None, batch_hook: BatchHook | None = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.progress = progress or NullProgress()
        self.stop = stop or StopFlag()
        self.batch_hook = batch_hook
        self.threat = ThreatModel.parse(cfg.eps, cfg.norm)
        self.defense = build_defense(cfg.defense, self.threat, cfg.defense_options)
        self.device = resolve_device(cfg.device)
        self.splits: DataSplits = load_splits(
            cfg.dataset, data_dir=cfg.data_dir, download=cfg.download, n_train=cfg.n_train,
            val_size=cfg.val_size, split_seed=cfg.split_seed, options=cfg.dataset_options)
        seed_everything(cfg.seed)
        self.model = model_for(cfg, self.splits.info).to(self.device)
        self.optimizer = build_optimizer(cfg, self.model)
        self.steps_per_epoch = num_batches(len(self.splits.train), cfg.batch_size)
        if cfg.max_batches_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_batches_per_epoch)
        self.start_epoch = 0
        self.start_batch = 0
        self.best: dict[str, Any] = {"epoch": None, "score": float("-inf")}
        self.partial: dict[str, float] = {}

    # ---------------------------------------------------------------- files
    def config_record(self, command: list[str] | None) -> dict[str, Any]:
        """The content of config.json."""
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
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def checkpoint_state(self, epoch: int, batch: int) -> dict[str, Any]:
        """Everything needed to continue exactly from (epoch, batch)."""
        return {
            "format": runs.CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "batch": batch,
            "rng": rng_state(),
            "best": dict(self.best),
            "partial": dict(self.partial),
            "defense_state": self.defense.state_dict(),
        }

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Load a ``last.pt`` produced by :meth:`checkpoint_state`."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.start_epoch, self.start_batch = int(ckpt["epoch"]), int(ckpt["batch"])
        self.best = dict(ckpt["best"])
        self.partial = dict(ckpt.get("partial", {}))
        self.defense.load_state_dict(ckpt.get("defense_state", {}))
        set_rng_state(ckpt["rng"])

    def write_summary(self, status: str, extra: dict[str, Any] | None = None) -> None:
        """Atomically rewrite summary.json."""
        history = runs.read_jsonl(self.run_dir / "metrics.jsonl")
        last = history[-1] if history else {}
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
        with PassCounter(self.model) as counter:
            for epoch in range(self.start_epoch, cfg.epochs):
                self.run_epoch(epoch, counter)
        self.write_summary("completed")
        return runs.read_json(self.run_dir / "summary.json")

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
        for b, (x, y, idx) in enumerate(
            batches(self.splits.train, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch, start_batch=first,
                    augment=self.splits.info.augment, device=self.device), start=first):
            if b >= self.steps_per_epoch:
                break
            ctx = StepContext(epoch=epoch, step=b, steps_per_epoch=self.steps_per_epoch, epochs=cfg.epochs,
                              num_classes=self.splits.info.num_classes, idx=idx)
            lr = cfg.lr * lr_factor(cfg, ctx.progress)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            counter.reset()
            logs = self.defense.train_step(self.model, self.optimizer, x, y, ctx)
            n = x.shape[0]
            logs["forward_passes"] = counter.forward / n
            logs["backward_passes"] = counter.backward / n
            self._accumulate(logs, n)
            self.progress.advance(handle, 1, images=n)
            if self.batch_hook is not None:
                self.batch_hook(epoch, b)
            if self.stop.requested and b + 1 < self.steps_per_epoch:
                self.partial["elapsed"] = self.partial.get("elapsed", 0.0) + time.perf_counter() - t0
                runs.save_checkpoint(self.run_dir / "checkpoints" / "last.pt", self.checkpoint_state(epoch, b + 1))
                self.write_summary("interrupted")
                self.progress.done(handle)
                raise Interrupted(f"stopped at epoch {epoch + 1} batch {b + 1}", str(self.run_dir))
        self.progress.done(handle)
        train_seconds = self.partial.get("elapsed", 0.0) + time.perf_counter() - t0
        record: dict[str, Any] = {"epoch": epoch, "lr": cfg.lr * lr_factor(cfg, epoch + 1 - 1e-9)}
        record.update(self._means())
        record.update(epoch_logs)
        record["train_seconds"] = train_seconds
        record.update(self.validate(epoch))
        runs.append_jsonl(self.run_dir / "metrics.jsonl", record)
        score = self.selection_score(record)
        if score >= self.best["score"] or self.best["epoch"] is None:
            self.best = {"epoch": epoch, "score": score, "val_clean_acc": record.get("val_clean_acc"),
                         "val_robust_acc": record.get("val_robust_acc")}
            runs.save_checkpoint(self.run_dir / "checkpoints" / "best.pt",
                                 {"format": runs.CHECKPOINT_FORMAT, "model": self.model.state_dict(),
                                  "epoch": epoch, "select": self.select_rule, "score": score})
        self.partial = {}
        runs.save_checkpoint(self.run_dir / "checkpoints" / "last.pt", self.checkpoint_state(epoch + 1, 0))
        stopping = self.stop.requested and epoch + 1 < cfg.epochs
        self.write_summary("completed" if epoch + 1 >= cfg.epochs else "interrupted" if stopping else "running")
        self.progress.log(self._epoch_line(record))
        if stopping:
            raise Interrupted(f"stopped after epoch {epoch + 1}", str(self.run_dir))

    def _accumulate(self, logs: dict[str, float], n: int) -> None:
        self.partial["n"] = self.partial.get("n", 0.0) + n
        for k, v in logs.items():
            self.partial[f"sum_{k}"] = self.partial.get(f"sum_{k}", 0.0) + float(v) * n

    def _means(self) -> dict[str, float]:
        n = self.partial.get("n", 0.0)
        return {k[4:]: v / n for k, v in self.partial.items() if k.startswith("sum_") and n}

    def _epoch_line(self, r: dict[str, Any]) -> str:
        parts = [f"epoch {r['epoch'] + 1}/{self.cfg.epochs}", f"loss {r.get('loss', float('nan')):.4f}"]
        for key, label in (("acc", "train acc"), ("adv_acc", "train adv acc"), ("val_clean_acc", "val clean"),
                           ("val_robust_acc", f"val PGD-{self.cfg.val_attack_steps}")):
            if key in r:
                parts.append(f"{label} {100 * r[key]:.1f}%")
        parts.append(f"{r['train_seconds']:.1f}s")
        return "  ".join(parts)


def start_run(cfg: TrainConfig, *, out: str | Path = "runs", name: str | None = None,
              command: list[str] | None = None, progress: NullProgress | None = None, stop: StopFlag | None = None,
              batch_hook: BatchHook | None = None) -> tuple[Path, dict[str, Any]]:
    """Create a new run directory, write config.json and train; returns (run_dir, summary)."""
    run_dir = runs.unique_run_dir(out, name or default_run_name(cfg))
    trainer = Trainer(cfg, run_dir, progress=progress, stop=stop, batch_hook=batch_hook)
    if cfg.init_from:
        trainer.init_file = load_init_weights(trainer.model, cfg.init_from)
    run_dir.mkdir(parents=True, exist_ok=False)
    with runs.RunLock(run_dir, "train"):
        record = trainer.config_record(command if command is not None else sys.argv)
        if cfg.init_from:
            record["init_from"] = trainer.init_file
        runs.write_json(run_dir / "config.json", record)
        trainer.write_summary("running")
        return run_dir, trainer.run()


def resume_run(run_dir: str | Path, *, progress: NullProgress | None = None, stop: StopFlag | None = None,
               batch_hook: BatchHook | None = None, epochs: int | None = None) -> tuple[Path, dict[str, Any]]:
    """Continue a run from ``checkpoints/last.pt`` exactly where it stopped (``epochs`` may extend it)."""
    run_dir = runs.resolve_run(run_dir)
    record = runs.read_json(run_dir / "config.json")
    cfg = TrainConfig(**record["config"])
    if epochs is not None:
        cfg = dataclasses.replace(cfg, epochs=epochs)
    last = run_dir / "checkpoints" / "last.pt"
    with runs.RunLock(run_dir, "train"):
        trainer = Trainer(cfg, run_dir, progress=progress, stop=stop, batch_hook=batch_hook)
        if last.is_file():
            trainer.restore(runs.load_checkpoint(last, map_location=trainer.device))
        elif cfg.init_from:
            load_init_weights(trainer.model, cfg.init_from)
        # forget metric lines of epochs that will be redone (written before a crash)
        history = [h for h in runs.read_jsonl(run_dir / "metrics.jsonl") if h["epoch"] < trainer.start_epoch]
        with runs.atomic_path(run_dir / "metrics.jsonl") as tmp:
            tmp.write_text("".join(__import__("json").dumps(h) + "\n" for h in history))
        if epochs is not None:
            record["config"]["epochs"] = epochs
            runs.write_json(run_dir / "config.json", record)
        if trainer.start_epoch >= cfg.epochs:
            trainer.write_summary("completed")
            return run_dir, runs.read_json(run_dir / "summary.json")
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
