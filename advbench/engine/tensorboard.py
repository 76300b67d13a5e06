"""Per-epoch metrics as TensorBoard scalars (optional: ``pip install 'advbench[tensorboard]'``).

Event files go to ``RUN/tensorboard/`` (``tensorboard --logdir runs/`` shows every run). Each metrics line of
``metrics.jsonl`` becomes scalars at step ``epoch + 1`` (epochs counted from 1, as the console prints them):
``train/loss``, ``train/acc``, ``train/adv_acc`` and the defense's own logs under ``train/``, ``val/clean_acc`` and
``val/robust_acc`` (and the rest of ``val_*``), ``lr``, and ``cost/`` (seconds, passes per step, peak memory).

The trainer calls :meth:`TensorBoardLog.epoch` after each epoch's metrics line; :func:`write_run` writes the
whole ``metrics.jsonl`` of an existing run (``advbench export RUN --format tensorboard``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from advbench import runs
from advbench.errors import UserError

LOG_DIR = "tensorboard"
_COST = ("train_seconds", "val_seconds", "forward_passes", "backward_passes", "peak_mem_bytes", "peak_mem_extra_bytes")


def scalar_tags(record: dict[str, Any]) -> dict[str, float]:
    """The TensorBoard tag and value of every finite number of one metrics line (``epoch`` is the step)."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(float(value)):
            continue
        if key == "lr":
            tag = "lr"
        elif key in _COST:
            tag = f"cost/{key}"
        elif key.startswith("val_"):
            tag = f"val/{key[4:]}"
        else:
            tag = f"train/{key}"
        out[tag] = float(value)
    return out


class TensorBoardLog:
    """A run's TensorBoard event writer, opened on first use (call on rank 0 only)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._writer: Any = None

    def _open(self) -> Any:
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError("log=tensorboard needs the tensorboard package: pip install 'advbench[tensorboard]'"
                                ) from None
            self._writer = SummaryWriter(log_dir=str(self.run_dir / LOG_DIR))
        return self._writer

    def epoch(self, record: dict[str, Any]) -> None:
        """Write one metrics line (as appended to ``metrics.jsonl``) and flush it to disk."""
        writer = self._open()
        for tag, value in scalar_tags(record).items():
            writer.add_scalar(tag, value, global_step=int(record["epoch"]) + 1)
        writer.flush()

    def close(self) -> None:
        """Close the event file (a later :meth:`epoch` opens a new one)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def write_run(run_dir: str | Path) -> Path:
    """Write every line of ``RUN/metrics.jsonl`` as TensorBoard scalars, replacing the event files already in
    ``RUN/tensorboard/`` (so a second export does not draw every point twice); returns that folder."""
    run = Path(run_dir)
    lines = runs.read_jsonl(run / "metrics.jsonl") if (run / "metrics.jsonl").is_file() else []
    if not lines:
        raise UserError(f"{run} has no metrics.jsonl lines to write (train it first)")
    for old in (run / LOG_DIR).glob("events.out.tfevents.*"):
        old.unlink()
    log = TensorBoardLog(run)
    try:
        for record in lines:
            log.epoch(record)
    finally:
        log.close()
    return run / LOG_DIR
