"""Setting a run up before its first step: runtime checks, the data, the model, speed flags, the optimizer.

Everything here runs once per process (under torchrun on every rank) and fails with one-line
:class:`~advbench.errors.UserError` s before any training when a setting cannot be honoured. The model of a
run is built in one place, :func:`build_run_model`, both for training and for loading a finished run.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advbench import runs
from advbench.config import TrainConfig, run_config
from advbench.core import distributed
from advbench.data import DatasetInfo, DataSplits, dataset_info, is_lazy, load_splits
from advbench.defenses import DEFENSES
from advbench.engine.state import memory_kind
from advbench.errors import UserError
from advbench.models import build_model, enable_grad_checkpointing

#: the uint8 train split is kept on the GPU (no host-to-device copies) below this size unless told otherwise
DATA_ON_DEVICE_MAX = 4 * 2**30


# ---------------------------------------------------------------- checks
def dist_backend(cfg: TrainConfig) -> str | None:
    """The process-group backend asked for (None: chosen from the device)."""
    return None if cfg.dist_backend == "auto" else cfg.dist_backend


#: float16 on a CPU is emulated (an epoch of 64 images took over a minute): refused. The tests switch this on
#: to exercise the loss-scaling code path on tiny models, since CI has no GPU.
CPU_FP16_FOR_TESTS = False


def check_runtime(cfg: TrainConfig, device: torch.device, world: int) -> None:
    """One-line UserErrors for speed / distributed settings the device or the defense cannot honour."""
    if cfg.amp != "off" and device.type not in ("cuda", "cpu"):
        raise UserError(f"--amp {cfg.amp} needs a CUDA or CPU device, got {device}; use --amp off")
    if cfg.amp == "fp16" and device.type == "cpu" and not CPU_FP16_FOR_TESTS:
        raise UserError("--amp fp16 needs CUDA: float16 on a CPU is emulated and far slower than float32; use "
                        "--amp bf16 or --amp off on a CPU")
    if cfg.amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("--amp bf16: this GPU does not support bfloat16; use --amp fp16 or off")
    if cfg.sync_bn and device.type != "cuda":
        raise UserError("--sync-bn needs CUDA (PyTorch's SyncBatchNorm runs on GPUs only); on CPU drop it: "
                        "BatchNorm statistics are then averaged across ranks at every epoch end")
    if world > 1 and cfg.batch_size < world:
        raise UserError(f"--batch-size {cfg.batch_size} is the global batch and must be at least the number of "
                        f"processes ({world})")
    if cfg.compile and DEFENSES.get(cfg.defense).double_backward:
        raise UserError(f"--compile: '{cfg.defense}' differentiates through a gradient (double backward), which "
                        "torch.compile does not support; run without --compile")


def compile_failure(defense: str, err: BaseException) -> str:
    """The one-line error for a first step that fails under ``--compile``."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return (f"--compile: the first training step of '{defense}' failed under torch.compile ({type(err).__name__}: "
            f"{first}); the inductor backend needs a working C++ compiler; run without --compile")


# ---------------------------------------------------------------- data, model, optimizer
def load_run_splits(cfg: TrainConfig, world: int) -> DataSplits:
    """The run's train / val / test splits; with ``download`` under torchrun rank 0 fetches them first."""
    fetch_first = cfg.download and world > 1  # the other ranks read what rank 0 fetched
    if fetch_first and not distributed.is_main():
        distributed.barrier()
    splits = load_splits(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download, n_train=cfg.n_train,
                         val_size=cfg.val_size, split_seed=cfg.split_seed, options=cfg.dataset_options)
    if fetch_first and distributed.is_main():
        distributed.barrier()
    return splits


def build_run_model(cfg: TrainConfig, info: DatasetInfo) -> nn.Module:
    """The configured model for a dataset (normalisation inside): the one builder of a run's model."""
    c, h, _w = info.shape
    return build_model(cfg.model, num_classes=info.num_classes, in_channels=c, input_size=h, mean=info.mean,
                       std=info.std, options=cfg.model_options)


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov) or Adam with weight decay on all parameters, or (``bias_decay=false``) on all but
    those named ``*.bias`` (conv, linear and BatchNorm biases: the DAWNBench recipe's "0 on biases")."""
    params: Any = model.parameters()
    if not cfg.bias_decay:
        named = list(model.named_parameters())
        params = [{"params": [p for n, p in named if not n.endswith("bias")]},
                  {"params": [p for n, p in named if n.endswith("bias")], "weight_decay": 0.0}]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)


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


#: a checkpoint kept at the end of epoch N (``TrainConfig.save_epochs``)
EPOCH_CHECKPOINT = re.compile(r"epoch-[1-9]\d*")


def load_run_model(run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu"
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a run's model from config.json and load ``best`` or ``last`` weights (eval mode)."""
    run_dir = runs.resolve_run(run_dir)
    record, cfg = run_config(run_dir)
    info = dataset_info(cfg.dataset, cfg.dataset_options)
    # the classes and image shape the run recorded when it trained
    info = dataclasses.replace(info, num_classes=record.get("num_classes", info.num_classes),
                               shape=tuple(record.get("input_shape", info.shape)))
    model = build_run_model(cfg, info)
    named = checkpoint in {"best", "last"} or EPOCH_CHECKPOINT.fullmatch(checkpoint) is not None
    path = run_dir / "checkpoints" / f"{checkpoint}.pt" if named else Path(checkpoint)
    if not path.is_file():
        raise UserError(f"no {checkpoint} checkpoint in {run_dir}; train it first or pass --checkpoint last")
    ckpt = runs.load_checkpoint(path, map_location=device)
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    return model, record


# ---------------------------------------------------------------- speed flags
def apply_speed_flags(cfg: TrainConfig, model: nn.Module, splits: DataSplits, device: torch.device,
                      world: int) -> tuple[nn.Module, dict[str, Any]]:
    """Apply grad checkpointing, SyncBN, channels_last, compile, cudnn and data placement; return the model
    (SyncBN and channels_last make a new one) and the resolved settings recorded in config.json."""
    cuda = device.type == "cuda"
    if cfg.grad_checkpointing:
        enable_grad_checkpointing(model, cfg.model)
    sync_bn = bool(cfg.sync_bn and world > 1 and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                                     for m in model.modules()))
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.compile:
        net = getattr(model, "net", model)  # the wrapper stays eager: pass-counting hooks live there
        net.compile(backend=cfg.compile_backend)
    benchmark = bool(cuda if cfg.cudnn_benchmark is None else cfg.cudnn_benchmark) and cuda
    if cuda:
        torch.backends.cudnn.benchmark = benchmark
    train = splits.train
    lazy = is_lazy(train.x)  # files decoded per batch (ImageNet): stays on the CPU
    nbytes = 0 if lazy else train.x.element_size() * train.x.nelement()
    on_device = bool(cuda and not lazy and (nbytes < DATA_ON_DEVICE_MAX if cfg.data_on_device is None
                                            else cfg.data_on_device))
    if on_device:
        splits.train = type(train)(train.x.to(device), train.y.to(device))
    pin_memory = bool(cuda and not on_device and (cfg.pin_memory is None or cfg.pin_memory))
    return model, {
        "amp": cfg.amp,
        "autocast_dtype": None if cfg.amp == "off" else cfg.amp,
        "grad_scaler": cfg.amp == "fp16",
        "channels_last": cfg.channels_last,
        "compile": cfg.compile,
        "compile_backend": cfg.compile_backend if cfg.compile else None,
        "cudnn_benchmark": benchmark,
        "grad_checkpointing": cfg.grad_checkpointing,
        "sync_bn": sync_bn,
        "data": {"storage": "files decoded per batch" if lazy else "in-memory tensors",
                 "train_on_device": on_device or not cuda,
                 "pin_memory": pin_memory, "non_blocking_copies": pin_memory, "loader_workers": 0},
        "memory": {"kind": memory_kind(device), "every": cfg.mem_every},
        "cpu_threads": torch.get_num_threads(),
    }
