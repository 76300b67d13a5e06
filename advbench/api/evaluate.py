"""``advbench.evaluate(model, ...)``: any model (an ``nn.Module`` or a ``--model-module`` spec) on a dataset or
tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advbench import runs
from advbench.api.jobs import main_rank_first, run_job, suite_for, threats_for
from advbench.api.models import check_logits, external_record, load_model_module, load_source
from advbench.config import parse_set_options
from advbench.core import distributed
from advbench.core.devices import rank_device
from advbench.data import load_splits
from advbench.errors import UserError
from advbench.threat import parse_norm


def evaluate(model: Any, *, dataset: Any = "synthetic", suite: str | None = "pgd", attack: str | None = None,
             attack_options: dict[str, Any] | list[str] | None = None, eps: str | None = "8/255", norm: str = "linf",
             n_eval: int = 1000, batch_size: int = 256, seed: int = 0, out: str | Path = "runs/external",
             name: str | None = None, checkpoint: str | Path | None = None, source: Any = None,
             data_dir: str | None = None, download: bool = False, dataset_options: dict[str, Any] | None = None,
             device: str = "auto", force: bool = False, quiet: bool = True, stop: Any = None, batch_hook: Any = None,
             hygiene: bool = True, attack_hook: Any = None, adapt: bool = False) -> dict[str, Any]:
    """Evaluate any model (inputs in [0, 1], logits out) with a suite; same result and JSON as ``advbench attack``.

    ``model``: an ``nn.Module`` or a ``pkg.module:factory`` spec (with optional ``checkpoint``).
    ``dataset``: a registered dataset name (its test split) or ``(x, y)`` tensors (uint8 or [0, 1] floats).
    Writes ``out/attacks/<suite>.json`` (and ``out/config.json`` describing the model, so that
    ``advbench report out`` shows it). ``source``: a model or run directory for transfer attacks. ``adapt``: probe
    first and add the attack suited to each kind of gradient masking found.
    """
    if n_eval < 1 or batch_size < 1:
        raise UserError("n_eval and batch_size must be >= 1")
    spec = model if isinstance(model, str) else None
    label = name or (spec.split(":")[-1] if spec else type(model).__name__)
    opts = parse_set_options(attack_options) if isinstance(attack_options, list) else attack_options
    the_suite = suite_for(suite, attack, opts)
    the_norm = parse_norm(norm)
    threats = threats_for(eps, the_norm, "8/255")
    dev = rank_device(device)  # under torchrun, ``cuda`` is this rank's GPU
    with distributed.process_group(dev):  # torchrun: each rank evaluates a shard
        net = load_model_module(model, checkpoint, dev) if spec is not None else model.to(dev).eval()
        if isinstance(dataset, str):
            with main_rank_first(download):
                data: Any = load_splits(dataset, data_dir=data_dir, download=download, n_test=n_eval,
                                        options=dataset_options).test
            dataset_name = dataset
        else:
            data, dataset_name = dataset, "custom"
        check_logits(net, data, f"--model-module {spec}" if spec is not None else type(net).__name__)
        out_dir = Path(out)
        if distributed.is_main() and not runs.is_run_dir(out_dir):
            runs.check_out_dir(out_dir)
            runs.write_json(out_dir / "config.json", external_record(
                label, dataset_name, threats[0].eps_text, the_norm, seed, spec,
                str(checkpoint) if checkpoint else None))
        distributed.barrier()
        source_model, source_desc = load_source(source, dev)
        described = {"model": label, "model_module": spec, "checkpoint": str(checkpoint) if checkpoint else None,
                     "dataset": dataset_name}
        return run_job(net, data, the_suite=the_suite, threats=threats, n_eval=n_eval, batch_size=batch_size,
                        seed=seed, described=described, out_dir=out_dir, dev=dev, source_model=source_model,
                        source_desc=source_desc, hygiene=hygiene, force=force, quiet=quiet, stop=stop,
                        batch_hook=batch_hook, attack_hook=attack_hook, adapt=adapt)
