"""``advbench attack RUN``: attack a trained run's checkpoint with a suite or one attack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advbench import runs
from advbench.api.jobs import main_rank_first, run_job, suite_for, threats_for
from advbench.api.models import load_any_run_model, load_source
from advbench.config import parse_set_options, run_config
from advbench.core import distributed
from advbench.core.devices import rank_device
from advbench.data import load_splits
from advbench.engine.setup import EPOCH_CHECKPOINT
from advbench.errors import UserError


def attack(run: str | Path, *, suite: str | None = "pgd", attack: str | None = None,
           attack_options: dict[str, Any] | list[str] | None = None, eps: str | None = None,
           norm: str | None = None, n_eval: int = 1000, batch_size: int = 256, seed: int = 0,
           checkpoint: str = "best", device: str = "auto", force: bool = False, quiet: bool = True,
           stop: Any = None, batch_hook: Any = None, source: str | Path | Any = None, hygiene: bool = True,
           attack_hook: Any = None, adapt: bool = False, sample_seed: int | None = None) -> dict[str, Any]:
    """Attack a trained run with a suite (or one ``attack``); writes and returns attacks/<suite>.json.

    ``sample_seed``: attack ``n_eval`` test images drawn at random with this seed instead of the first ``n_eval``
    (recorded in the result's ``source``: ``sample_seed`` and ``test_subset``).

    ``source`` (a run directory or a model) is the model transfer attacks are crafted on; ``hygiene``
    runs the model probe behind the checks; ``attack_hook(event, **info)`` sees attack-internal
    checkpoints (AutoAttack components); ``adapt`` probes first and adds the attack suited to each kind of
    gradient masking found (the result's ``adapted`` worst case stands beside the unadapted ``robust``).
    """
    run_dir = runs.resolve_run(run)
    if n_eval < 1 or batch_size < 1:
        raise UserError("--n-eval and --batch-size must be >= 1")
    if sample_seed is not None and sample_seed < 0:
        raise UserError(f"--sample-seed must be >= 0, got {sample_seed}")
    opts = parse_set_options(attack_options) if isinstance(attack_options, list) else attack_options
    the_suite = suite_for(suite, attack, opts)
    record, cfg = run_config(run_dir)
    threats = threats_for(eps, norm or cfg.norm, cfg.eps)
    dev = rank_device(device)  # under torchrun, ``cuda`` is this rank's GPU
    with distributed.process_group(dev):  # torchrun: each rank evaluates a shard
        model, _ = load_any_run_model(run_dir, checkpoint, dev)
        ckpt_epoch = None
        if (checkpoint in {"best", "last"} or EPOCH_CHECKPOINT.fullmatch(checkpoint)) and record.get(
                "kind") != "external":
            ckpt_epoch = runs.load_checkpoint(run_dir / "checkpoints" / f"{checkpoint}.pt").get("epoch")
        with main_rank_first(cfg.download):
            splits = load_splits(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download, n_train=cfg.n_train,
                                 val_size=cfg.val_size, split_seed=cfg.split_seed, n_test=n_eval,
                                 options=cfg.dataset_options, test_sample_seed=sample_seed)
        source_model, source_desc = load_source(source, dev)
        return run_job(model, splits.test, the_suite=the_suite, threats=threats, n_eval=n_eval,
                        batch_size=batch_size, seed=seed,
                        described={"run": run_dir.name, "checkpoint": checkpoint, "epoch": ckpt_epoch, **(
                            {} if sample_seed is None else {"sample_seed": sample_seed,
                                                            "test_subset": splits.meta["test_subset"]})},
                        out_dir=run_dir, dev=dev, source_model=source_model, source_desc=source_desc, hygiene=hygiene,
                        force=force, quiet=quiet, stop=stop, batch_hook=batch_hook, attack_hook=attack_hook,
                        adapt=adapt, tag=checkpoint if EPOCH_CHECKPOINT.fullmatch(checkpoint) else None)
