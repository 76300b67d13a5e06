"""``advbench certify RUN``: certify a trained run's checkpoint by randomized smoothing, or estimate Finlay and
Oberman's L-bound or ω-bound; writes RUN/certify/<name>.json (docs/certification.md)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from advbench import runs
from advbench.api.models import load_any_run_model
from advbench.certify import BoundOptions, SmoothingOptions
from advbench.config import run_config
from advbench.core.devices import resolve_device
from advbench.core.progress import make_progress
from advbench.core.signals import StopFlag, stop_on_signals
from advbench.data import load_splits
from advbench.engine.certify import DEFAULT_GRID, DEFAULT_RADII, METHODS, CertifyJob, certify_images, parse_radii
from advbench.engine.job import identity_of
from advbench.engine.setup import EPOCH_CHECKPOINT
from advbench.errors import UserError
from advbench.threat import check_eps_in_range, parse_norm


def certify(run: str | Path, *, method: str = "smoothing", norm: str = "l2", radii: str | None = None,
            sigma: float = 0.25, n0: int = 100, n: int = 100_000, alpha: float = 0.001, batch_size: int = 1000,
            batches: int = 100, stat_batch: int = 100, p: float = 0.001, grid: str | None = None,
            n_eval: int = 1000, seed: int = 0, checkpoint: str = "best", name: str | None = None,
            device: str = "auto", force: bool = False, quiet: bool = True,
            stop: StopFlag | None = None) -> dict[str, Any]:
    """Certify the first ``n_eval`` test images of ``run``; write and return ``RUN/certify/<name>.json``.

    ``method``: ``smoothing`` (Cohen et al.'s CERTIFY with ``sigma``, ``n0``, ``n``, ``alpha``; ``batch_size`` noisy
    copies per forward; ℓ2 only), ``lbound`` or ``omega`` (Finlay and Oberman's bounds in ``norm``, with GEV
    estimates from ``batches`` maxima of ``stat_batch`` samples at threshold ``p``; ``batch_size`` images per
    gradient pass; ``grid``: the ω-bound's ε grid). ``radii``: comma list (default: the paper's radii of the
    norm). ``name``: the result's file name (default ``smoothing-sigma0.25``, ``lbound-l2``, ``omega-l2``). A stored
    result of the very same job is returned (``reused``) unless ``force``.
    """
    if method not in METHODS:
        raise UserError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    norm = parse_norm(norm)
    if method == "smoothing" and norm != "l2":
        raise UserError("randomized smoothing with Gaussian noise certifies l2 radii; use --norm l2 (or --method "
                        "lbound/omega for linf)")
    if n_eval < 1 or batch_size < 1:
        raise UserError("--n-eval and --batch-size must be >= 1")
    the_radii = parse_radii(radii, norm, DEFAULT_RADII[norm])
    for value, text in the_radii:
        check_eps_in_range(value, text, norm)
    smoothing = bound = None
    the_grid: list[tuple[float, str]] = []
    if method == "smoothing":
        smoothing = SmoothingOptions(sigma=sigma, n0=n0, n=n, alpha=alpha, batch=batch_size)
        smoothing.validate()
    else:
        bound = BoundOptions(batches=batches, batch=stat_batch, p=p)
        bound.validate()
        if method == "omega":
            the_grid = parse_radii(grid, norm, DEFAULT_GRID[norm])
            for value, text in the_grid:
                check_eps_in_range(value, text, norm)
    if name is not None:
        runs.check_run_name(name)
        if name.startswith(".") or not name.strip():
            raise UserError(f"--name {name!r}: give a plain file name such as smoothing-sigma0.5")
    run_dir = runs.resolve_run(run)
    record, cfg = run_config(run_dir)
    dev = resolve_device(device)
    model, _ = load_any_run_model(run_dir, checkpoint, dev)
    ckpt_epoch = None
    if (checkpoint in {"best", "last"} or EPOCH_CHECKPOINT.fullmatch(checkpoint)) and record.get("kind") != "external":
        ckpt_epoch = runs.load_checkpoint(run_dir / "checkpoints" / f"{checkpoint}.pt").get("epoch")
    splits = load_splits(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download, n_train=cfg.n_train,
                         val_size=cfg.val_size, split_seed=cfg.split_seed, n_test=n_eval, options=cfg.dataset_options)
    job = CertifyJob(method=method, norm=norm, radii=the_radii, n_eval=n_eval, seed=seed,
                     batch_size=batch_size if method != "smoothing" else min(batch_size, 256),
                     smoothing=smoothing, bound=bound, grid=the_grid,
                     source={"run": run_dir.name, "checkpoint": checkpoint, "epoch": ckpt_epoch},
                     identity=identity_of(model, splits.test, n_eval))
    out_file = run_dir / "certify" / f"{name or job.default_name}.json"
    if out_file.is_file() and not force:
        try:
            stored = runs.read_json(out_file)
        except runs.CorruptFile:
            stored = None
        if isinstance(stored, dict) and stored.get("fingerprint") == job.fingerprint():
            return {**stored, "reused": True}
    flag = stop or StopFlag()
    with contextlib.ExitStack() as stack:
        stack.enter_context(runs.RunLock(run_dir, f"certify {out_file.stem}"))
        progress = stack.enter_context(make_progress(quiet))
        stack.enter_context(stop_on_signals(flag))
        return certify_images(model, splits.test, job, out_file, device=dev, progress=progress, stop=flag)
