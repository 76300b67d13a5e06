"""The training loop: epochs, per-iteration LR schedule, validation, checkpoints, exact resume.

Read top to bottom: :class:`Trainer` sets a run up (:mod:`advbench.engine.setup`), then :meth:`Trainer.run`
calls :meth:`Trainer.run_epoch` per epoch, which calls :meth:`Trainer.train_step` per batch and ends the
epoch with validation and checkpoints; what is written lives in :mod:`advbench.engine.state`.
:func:`start_run` and :func:`resume_run` are the two ways in.

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
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from advbench import runs
from advbench.config import TrainConfig, lr_factor, phase_at, phase_batch, run_config
from advbench.core import distributed
from advbench.core.devices import rank_device
from advbench.core.memory import PeakMemory
from advbench.core.optim import SyncedOptimizer, average_buffers, broadcast_module
from advbench.core.passes import PassCounter
from advbench.core.progress import NullProgress
from advbench.core.seeding import derived_seed, seed_everything
from advbench.core.signals import Interrupted, StopFlag
from advbench.data import DataSplits, batches, num_batches
from advbench.defenses import DEFENSES, StepContext, build_defense, options_for_dataset
from advbench.engine import state
from advbench.engine.setup import (
    apply_speed_flags,
    build_optimizer,
    build_run_model,
    check_runtime,
    compile_failure,
    dist_backend,
    load_init_weights,
    load_run_splits,
)
from advbench.engine.validation import ValidationStopped, clean_accuracy, pgd_accuracy
from advbench.errors import UserError
from advbench.threat import ThreatModel

#: called after every training batch with (epoch, batch); tests use it to simulate an interrupt
BatchHook = Callable[[int, int], None]


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
        self.defense = build_defense(cfg.defense, self.threat,
                                     options_for_dataset(cfg.defense, cfg.dataset, cfg.defense_options))
        self.device = rank_device(cfg.device)
        check_runtime(cfg, self.device, self.world)
        self.splits: DataSplits = load_run_splits(cfg, self.world)
        seed_everything(cfg.seed)
        model = build_run_model(cfg, self.splits.info).to(self.device)
        self.model, self.runtime = apply_speed_flags(cfg, model, self.splits, self.device, self.world)
        self.pin_memory = self.runtime["data"]["pin_memory"]
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.amp == "fp16" else None
        self.optimizer = SyncedOptimizer(build_optimizer(cfg, self.model), scaler=self.scaler, sync=self.world > 1)
        if self.rank > 0:  # attack / augmentation randomness differs per rank; rank 0 keeps the 1-process stream
            seed_everything(derived_seed(cfg.seed, "rank", self.rank))
        self.steps_per_epoch = self.epoch_steps(0)
        self.start_epoch = 0
        self.start_batch = 0
        self.best: dict[str, Any] = {"epoch": None, "score": float("-inf")}
        self.partial: dict[str, float] = {}  # this rank's running sums of the epoch (see engine.state)
        #: steps whose logs (device tensors) are not yet in ``partial``: read every ``log_every`` steps
        self.pending: list[tuple[dict[str, Any], int]] = []
        self.log_every = state.LOG_EVERY
        self.restored = False
        self.notes: list[str] = []
        self._steps_run = 0

    @property
    def select_rule(self) -> str:
        """The checkpoint-selection rule; ``auto`` is the defense's own default (clean validation accuracy
        for standard training, whose most robust epoch is the untrained one; robust accuracy otherwise)."""
        if self.cfg.select == "auto":
            return DEFENSES.get(self.cfg.defense).default_select
        return self.cfg.select

    def epoch_batch(self, epoch: int) -> int:
        """The global batch size of ``epoch``: ``batch_size``, or the DAWNBench phase's (scaled by batch_size)."""
        if self.cfg.schedule == "dawnbench":
            return phase_batch(self.cfg, phase_at(self.cfg, epoch))
        return self.cfg.batch_size

    def epoch_steps(self, epoch: int) -> int:
        """Training steps of ``epoch`` (its batch size's batches, at most ``max_batches_per_epoch``)."""
        steps = num_batches(len(self.splits.train), self.epoch_batch(epoch))
        return min(steps, self.cfg.max_batches_per_epoch) if self.cfg.max_batches_per_epoch else steps

    def epoch_batches(self, epoch: int, first: int) -> Any:
        """The training batches of ``epoch`` from batch ``first``: the dataset's augmentation, or under the
        DAWNBench schedule random-resized crops of the phase's size (:mod:`advbench.engine.progressive`); both are
        functions of (seed, epoch, batch), so a resume rebuilds exactly the batches it stopped in."""
        cfg = self.cfg
        shard = (self.rank, self.world) if self.world > 1 else None
        if cfg.schedule == "dawnbench":
            from advbench.engine.progressive import phase_batches

            phase = phase_at(cfg, epoch)
            return phase_batches(self.splits.train, self.epoch_batch(epoch), size=phase.size,
                                 min_scale=phase.min_scale, seed=cfg.seed, epoch=epoch, start_batch=first,
                                 device=self.device, shard=shard)
        return batches(self.splits.train, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch, start_batch=first,
                       augment=self.splits.info.augment, device=self.device, shard=shard, pin_memory=self.pin_memory,
                       scale=self.splits.info.scale, brightness=self.splits.info.brightness)

    # ---------------------------------------------------------------- files (what is written: engine.state)
    def config_record(self, command: list[str] | None) -> dict[str, Any]:
        """The content of config.json."""
        return state.config_record(self.cfg, threat=self.threat, defense=self.defense, splits=self.splits,
                                   device=self.device, world=self.world, runtime=self.runtime, command=command)

    def checkpoint_state(self, epoch: int, batch: int) -> dict[str, Any]:
        """Everything needed to continue exactly from (epoch, batch); collective under torchrun."""
        return state.checkpoint_state(self.model, self.optimizer, self.scaler, self.defense, epoch=epoch,
                                      batch=batch, best=self.best, partial=self.partial, world=self.world)

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a ``last.pt`` written by :meth:`checkpoint_state` (each rank takes its own RNG stream)."""
        resumed = state.restore_state(ckpt, self.model, self.optimizer, self.scaler, self.defense,
                                      rank=self.rank, world=self.world, seed=self.cfg.seed)
        self.start_epoch, self.start_batch = resumed.epoch, resumed.batch
        self.best, self.partial = resumed.best, resumed.partial
        self.notes += resumed.notes
        self.restored = True

    def write_summary(self, status: str) -> None:
        """Atomically rewrite summary.json (rank 0 only)."""
        if self.is_main:
            state.write_summary(self.run_dir, self.cfg, self.threat, status=status, select=self.select_rule,
                                best=self.best, world=self.world, device=self.device, notes=self.notes,
                                num_classes=self.splits.info.num_classes)

    # ---------------------------------------------------------------- loop
    def run(self) -> dict[str, Any]:
        """Train from ``start_epoch``/``start_batch`` to the end; return the summary."""
        if not self.restored:
            broadcast_module(self.model)  # every rank starts from rank 0's weights
        for note in self.notes:
            self.progress.log(f"note: {note}")
        with PassCounter(self.model) as counter:
            for epoch in range(self.start_epoch, self.cfg.epochs):
                self.run_epoch(epoch, counter)
        self.write_summary("completed")
        summary = runs.read_json(self.run_dir / "summary.json") if self.is_main else None
        return distributed.broadcast_object(summary)

    def run_epoch(self, epoch: int, counter: PassCounter) -> None:
        """One epoch of training (from the saved batch on a mid-epoch resume), then validation and checkpoints."""
        first = self.start_batch if epoch == self.start_epoch else 0
        self.steps_per_epoch = self.epoch_steps(epoch)  # a DAWNBench phase has its own batch size
        epoch_logs = self.defense.on_epoch_start(epoch, self.model)  # idempotent: also on a mid-epoch resume
        if first == 0:
            self.partial = {}
        train_seconds = self.train_batches(epoch, first, counter)
        self.end_epoch(epoch, epoch_logs, train_seconds)

    def train_batches(self, epoch: int, first: int, counter: PassCounter) -> float:
        """Batches ``first``.. of the epoch; returns the epoch's training seconds (also those before a resume).
        A stop request saves ``last.pt`` at the next batch and raises :class:`Interrupted` on every rank."""
        cfg = self.cfg
        self.model.train()
        handle = self.progress.task(f"epoch {epoch + 1}/{cfg.epochs}", self.steps_per_epoch)
        if first:
            self.progress.advance(handle, first)
        t0 = time.perf_counter()
        n_train = len(self.splits.train)
        batch_size = self.epoch_batch(epoch)
        for b, (x, y, idx) in enumerate(self.epoch_batches(epoch, first), start=first):
            if b >= self.steps_per_epoch:
                break
            n_global = min(batch_size, n_train - b * batch_size)
            if n_global >= self.world:  # a final batch with fewer examples than ranks is skipped (DDP only)
                self.train_step(epoch, b, x, y, idx, n_global, counter)
            loss = None
            if len(self.pending) >= self.log_every or b == first or b + 1 == self.steps_per_epoch:
                self.flush_logs()  # one host sync per logging interval (and the epoch's first loss at once)
                loss = state.means(self.partial).get("loss")
            self.progress.advance(handle, 1, images=n_global, loss=loss)
            if self.batch_hook is not None:
                self.batch_hook(epoch, b)
            if distributed.any_rank(self.stop.requested):  # also after the last batch: before validation
                self.flush_logs()
                self.partial["elapsed"] = self.partial.get("elapsed", 0.0) + time.perf_counter() - t0
                self.defense.sync_ranks()
                if b + 1 == self.steps_per_epoch:
                    average_buffers(self.model)  # as at every epoch's end, before its state is saved
                self.save_last(epoch, b + 1)
                self.write_summary("interrupted")
                self.progress.done(handle)
                raise Interrupted(f"stopped at epoch {epoch + 1} batch {b + 1}", str(self.run_dir))
        self.flush_logs()
        self.progress.done(handle)
        self.defense.sync_ranks()
        average_buffers(self.model)  # BN running statistics: the mean over ranks (identical afterwards)
        return self.partial.get("elapsed", 0.0) + time.perf_counter() - t0

    def end_epoch(self, epoch: int, epoch_logs: dict[str, float], train_seconds: float) -> None:
        """Metrics line, validation, ``best.pt``, ``last.pt`` and summary.json; stop here if asked to."""
        cfg = self.cfg
        record = state.epoch_record(cfg, epoch, state.reduce_partial(self.partial), epoch_logs, train_seconds,
                                    self.device, self.world)
        # validation on rank 0 (the others wait); every rank gets the record so all agree on "best"
        val = distributed.broadcast_object(self._validate_or_stop(epoch) if self.is_main else None)
        if val == "stopped":  # a stop arrived during validation: save "trained, validation pending" and stop
            self.save_last(epoch, self.steps_per_epoch)
            self.write_summary("interrupted")
            raise Interrupted(f"stopped during the validation of epoch {epoch + 1}", str(self.run_dir))
        record.update(val or {})
        if self.is_main:
            runs.append_jsonl(self.run_dir / "metrics.jsonl", record)
        score = state.selection_score(self.select_rule, record)
        if score >= self.best["score"] or self.best["epoch"] is None:
            self.best = {"epoch": epoch, "score": score, "val_clean_acc": record.get("val_clean_acc"),
                         "val_robust_acc": record.get("val_robust_acc")}
            if self.is_main:
                runs.save_checkpoint(self.run_dir / "checkpoints" / "best.pt",
                                     {"format": runs.CHECKPOINT_FORMAT, "model": self.model.state_dict(),
                                      "epoch": epoch, "select": self.select_rule, "score": score})
        self.partial = {}
        if epoch + 1 in cfg.save_epochs and self.is_main:  # a checkpoint the paper evaluates (before last.pt)
            runs.save_checkpoint(self.run_dir / "checkpoints" / f"epoch-{epoch + 1}.pt",
                                 {"format": runs.CHECKPOINT_FORMAT, "model": self.model.state_dict(), "epoch": epoch})
        self.save_last(epoch + 1, 0)
        stopping = distributed.any_rank(self.stop.requested) and epoch + 1 < cfg.epochs
        self.write_summary("completed" if epoch + 1 >= cfg.epochs else "interrupted" if stopping else "running")
        self.progress.log(state.epoch_line(cfg, record))
        if stopping:
            raise Interrupted(f"stopped after epoch {epoch + 1}", str(self.run_dir))

    def save_last(self, epoch: int, batch: int) -> None:
        """Write ``last.pt`` to continue from (epoch, batch); collective under torchrun, rank 0 writes."""
        ckpt = self.checkpoint_state(epoch, batch)
        if self.is_main:
            runs.save_checkpoint(self.run_dir / "checkpoints" / "last.pt", ckpt)

    def train_step(self, epoch: int, b: int, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, n_global: int,
                   counter: PassCounter) -> None:
        """One defense step on this rank's part of global batch ``b`` (AMP, memory recording, pass counting)."""
        cfg = self.cfg
        ctx = StepContext(epoch=epoch, step=b, steps_per_epoch=self.steps_per_epoch, epochs=cfg.epochs,
                          num_classes=self.splits.info.num_classes, idx=idx, optim=self.optimizer)
        lr = cfg.lr * lr_factor(cfg, ctx.progress)
        if cfg.eps_warmup > 0:  # the training attacks' eps at the end of this step of the warm-up
            origin = self.defense.first_attack_epoch() if cfg.eps_warmup_from == "attack" else 0.0
            done = ctx.progress + 1 / max(1, self.steps_per_epoch) - origin
            self.defense.threat = eps_at(self.threat, cfg.eps_warmup, max(0.0, done))
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
        self.pending.append((logs, n))  # read with the next flush_logs: no host sync in the step
        if mem is not None and mem.peak_bytes is not None:
            state.record_peak(self.partial, float(mem.peak_bytes), float(mem.extra_bytes or 0))

    def flush_logs(self) -> None:
        """Move the held steps' logs into the epoch's running sums (one host sync; same sums as per step)."""
        state.flush_logs(self.partial, self.pending)

    def _autocast(self) -> Any:
        """Autocast for the training step (``amp``); a null context when AMP is off."""
        if self.cfg.amp == "off":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _validate_or_stop(self, epoch: int) -> dict[str, float] | str:
        """:meth:`validate`, or ``"stopped"`` when a stop request arrives between two validation batches."""
        try:
            return self.validate(epoch)
        except ValidationStopped:
            return "stopped"

    def validate(self, epoch: int) -> dict[str, float]:
        """Clean and PGD accuracy on the validation split (or the test split for ``select=test-robust``)."""
        cfg = self.cfg
        split = self.splits.test if cfg.select == "test-robust" else self.splits.val
        n = min(cfg.val_n, len(split))
        if n == 0:
            return {}
        t0 = time.perf_counter()
        def stop() -> bool:  # rank 0 validates alone; the other ranks wait for its verdict (record or "stopped")
            return self.stop.requested

        clean = clean_accuracy(self.model, split, n, cfg.batch_size, self.device, stop=stop)
        out = {"val_clean_acc": clean}
        if cfg.val_attack_steps > 0:
            gen_seed = (cfg.seed, "val", epoch)
            out["val_robust_acc"] = pgd_accuracy(self.model, split, n, cfg.batch_size, self.device, self.threat,
                                                 steps=cfg.val_attack_steps, seed=gen_seed, stop=stop)
        out["val_seconds"] = time.perf_counter() - t0
        out["val_split"] = "test" if cfg.select == "test-robust" else "val"  # type: ignore[assignment]
        out["val_n"] = n
        return out


def eps_at(threat: ThreatModel, warmup: float, epochs_done: float) -> ThreatModel:
    """``threat`` with its eps scaled by ``min(1, epochs_done / warmup)`` (the linear eps warm-up)."""
    factor = min(1.0, epochs_done / warmup)
    return threat if factor >= 1.0 else dataclasses.replace(threat, eps=threat.eps * factor,
                                                             eps_text=f"{threat.eps * factor:.6g}")


def start_run(cfg: TrainConfig, *, out: str | Path = "runs", name: str | None = None,
              command: list[str] | None = None, progress: NullProgress | None = None, stop: StopFlag | None = None,
              batch_hook: BatchHook | None = None, recipe: str | None = None) -> tuple[Path, dict[str, Any]]:
    """Create a new run directory, write config.json and train; returns (run_dir, summary). ``recipe`` says
    where the settings came from (printed in the header line and stored in config.json).

    Under torchrun (WORLD_SIZE > 1) this joins the process group; rank 0 picks and creates the run
    directory and is the only rank that writes to it."""
    with distributed.process_group(rank_device(cfg.device), dist_backend(cfg)):
        main = distributed.is_main()
        run_name = runs.check_run_name(state.default_run_name(cfg) if name is None else name)
        trainer = Trainer(cfg, Path(out) / run_name, progress=progress, stop=stop, batch_hook=batch_hook)
        init_file = load_init_weights(trainer.model, cfg.init_from) if cfg.init_from else None
        # rank 0 creates the folder atomically (a taken name gets a -N suffix) and tells the others
        run_dir = Path(distributed.broadcast_object(str(runs.create_run_dir(out, run_name)) if main else None))
        trainer.run_dir = run_dir
        with runs.RunLock(run_dir, "train") if main else contextlib.nullcontext():
            if main:
                record = trainer.config_record(command if command is not None else sys.argv)
                if cfg.init_from:
                    record["init_from"] = init_file
                record["recipe"] = recipe or "advbench defaults and the settings given"
                runs.write_json(run_dir / "config.json", record)
                trainer.write_summary("running")
                trainer.progress.log(header_line(cfg, record["recipe"], run_dir))
            return run_dir, trainer.run()


def header_line(cfg: TrainConfig, recipe: str, run_dir: Path) -> str:
    """The one line printed before the first batch: what is trained, on what, from which recipe, and where."""
    init = f", fine-tuned from {cfg.init_from}" if cfg.init_from else ""
    return (f"{cfg.defense} on {cfg.dataset} / {cfg.model}, {cfg.norm} eps {cfg.eps}, {cfg.epochs} epochs "
            f"({cfg.optimizer} lr {cfg.lr:g}, {cfg.schedule}){init}; recipe: {recipe}; run: {run_dir}")


def done_epochs(run_dir: Path) -> int:
    """Epochs a run recorded as finished (metrics lines, or the summary's count)."""
    lines = [h for h in runs.read_jsonl(run_dir / "metrics.jsonl") if isinstance(h.get("epoch"), int)]
    summary_file = run_dir / "summary.json"
    try:
        summary = runs.read_object(summary_file) if summary_file.is_file() else {}
    except UserError:
        summary = {}
    completed = summary.get("epochs_completed")
    return max(len(lines), completed if isinstance(completed, int) else 0)


def resume_run(run_dir: str | Path, *, progress: NullProgress | None = None, stop: StopFlag | None = None,
               batch_hook: BatchHook | None = None, epochs: int | None = None) -> tuple[Path, dict[str, Any]]:
    """Continue a run from ``checkpoints/last.pt`` exactly where it stopped (``epochs`` may extend it).

    Works the same under torchrun: every rank loads ``last.pt`` and takes its own RNG stream from it; a
    different number of processes than the run was saved with is allowed (noted in summary.json)."""
    run_dir = runs.resolve_run(run_dir)
    record, cfg = run_config(run_dir)
    if epochs is not None:
        cfg = dataclasses.replace(cfg, epochs=epochs)
    last = run_dir / "checkpoints" / "last.pt"
    with distributed.process_group(rank_device(cfg.device), dist_backend(cfg)):
        main = distributed.is_main()
        with runs.RunLock(run_dir, "train") if main else contextlib.nullcontext():
            trainer = Trainer(cfg, run_dir, progress=progress, stop=stop, batch_hook=batch_hook)
            # rank 0 decides and tells the others: a rank that looked for itself could miss a last.pt that rank 0
            # is still writing (the ranks leave an interrupted run at different times) and start differently
            has_last, trained = distributed.broadcast_object((last.is_file(), done_epochs(run_dir)) if main else None)
            if has_last:
                trainer.restore(runs.load_checkpoint(last, map_location=trainer.device))
            elif trained:
                raise UserError(f"cannot resume {run_dir}: it trained {trained} epoch(s) but "
                                f"{last} is missing, so it cannot continue exactly; restore the file or start a new "
                                "run")
            elif cfg.init_from:
                load_init_weights(trainer.model, cfg.init_from)
            if main:
                # forget metric lines of epochs that will be redone (written before a crash)
                history = [h for h in runs.read_jsonl(run_dir / "metrics.jsonl")
                           if isinstance(h.get("epoch"), int) and h["epoch"] < trainer.start_epoch]
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
