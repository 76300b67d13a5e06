"""The Python API. The CLI calls exactly these functions, so notebooks, tests and the CLI share one path."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from pathlib import Path
from typing import Any

from advbench import runs
from advbench.config import TRAIN_KEYS, TrainConfig, apply_overrides, load_toml, parse_set_options
from advbench.errors import UserError
from advbench.registry import closest


def _split_overrides(defense: str, settings: dict[str, Any]) -> tuple[dict, dict, dict, dict]:
    """Route ``--set`` keys to the train config, defense, model or dataset options.

    ``model.X`` / ``data.X`` / ``defense.X`` prefixes are explicit; bare keys go to the train config when
    they name one of its fields, otherwise to the defense's options.
    """
    from advbench.config import field_types
    from advbench.defenses import DEFENSES

    defense_fields = field_types(DEFENSES.get(defense).Options)
    train, dopts, mopts, dsopts = {}, {}, {}, {}
    for key, value in settings.items():
        k = key.replace("-", "_")
        if k.startswith("defense."):
            dopts[k.split(".", 1)[1]] = value
        elif k.startswith("model."):
            mopts[k.split(".", 1)[1]] = value
        elif k.startswith(("data.", "dataset.")):
            dsopts[k.split(".", 1)[1]] = value
        elif k in defense_fields:
            dopts[k] = value
        elif k in TRAIN_KEYS and not k.endswith("_options"):
            train[k] = value
        else:
            valid = sorted(set(defense_fields) | (TRAIN_KEYS - {"defense_options", "model_options", "dataset_options"}))
            hint = closest(k, valid)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            raise UserError(f"unknown --set key '{key}' for defense '{defense}'{extra} "
                            "(use model.KEY or data.KEY for model and dataset options)")
    return train, dopts, mopts, dsopts


def make_train_config(options: dict[str, Any] | None = None, settings: dict[str, Any] | list[str] | None = None,
                      config_file: str | Path | None = None) -> TrainConfig:
    """Resolve a TrainConfig: defaults < TOML recipe < explicit options < ``--set`` settings."""
    merged: dict[str, Any] = {}
    if config_file:
        recipe = load_toml(config_file)
        for table, key in (("defense", "defense_options"), ("model", "model_options"), ("dataset", "dataset_options")):
            if isinstance(recipe.get(table), dict):
                recipe[key] = {**recipe.get(key, {}), **recipe.pop(table)}
        merged.update(recipe)
    merged.update({k: v for k, v in (options or {}).items() if v is not None})
    sets = parse_set_options(settings) if isinstance(settings, list) else dict(settings or {})
    defense = str(merged.get("defense", TrainConfig.defense))
    from advbench.defenses import DEFENSES

    defense = DEFENSES.canonical(defense)  # fail early on an unknown defense, with suggestions
    merged["defense"] = defense
    train, dopts, mopts, dsopts = _split_overrides(defense, sets)
    merged.update(train)
    for key, extra in (("defense_options", dopts), ("model_options", mopts), ("dataset_options", dsopts)):
        merged[key] = {**(merged.get(key) or {}), **extra}
    unknown = set(merged) - TRAIN_KEYS
    if unknown:
        name = sorted(unknown)[0]
        hint = closest(name, sorted(TRAIN_KEYS))
        raise UserError(f"unknown config key '{name}'" + (f"; did you mean {hint[0]!r}?" if hint else ""))
    cfg = apply_overrides(TrainConfig(), merged, "train")
    # validate defense options now (typed), and store them converted
    from advbench.defenses import build_defense
    from advbench.threat import ThreatModel

    threat = ThreatModel.parse(cfg.eps, cfg.norm)
    d = build_defense(cfg.defense, threat, cfg.defense_options)
    given = {k: getattr(d.options, k) for k in cfg.defense_options}
    return dataclasses.replace(cfg, defense_options=given)


def train(*, out: str | Path = "runs", name: str | None = None, resume: str | Path | None = None,
          settings: dict[str, Any] | list[str] | None = None, config_file: str | Path | None = None,
          quiet: bool = True, command: list[str] | None = None, stop: Any = None, batch_hook: Any = None,
          **options: Any) -> tuple[Path, dict[str, Any]]:
    """Train a defense (or resume a run); returns (run directory, summary dict).

    ``options`` are TrainConfig fields (dataset, model, defense, eps, norm, epochs, batch_size, lr, seed,
    n_train, ...); ``settings`` are ``--set`` style overrides routed to the defense, model or dataset.
    """
    import os

    from advbench.engine.progress import make_progress
    from advbench.engine.signals import StopFlag, stop_on_signals
    from advbench.engine.train import resume_run, start_run

    flag = stop or StopFlag()
    quiet = quiet or os.environ.get("RANK", "0") != "0"  # under torchrun rank 0 shows progress
    with make_progress(quiet) as progress, stop_on_signals(flag):
        if resume is not None:
            return resume_run(resume, progress=progress, stop=flag, batch_hook=batch_hook,
                              epochs=options.get("epochs"))
        cfg = make_train_config(options, settings, config_file)
        return start_run(cfg, out=out, name=name, command=command, progress=progress, stop=flag,
                         batch_hook=batch_hook)


def _suite_for(suite: str | None, attack: str | None, attack_options: dict[str, Any] | None):
    from advbench.attacks import ATTACKS, SUITES, single_attack_suite
    from advbench.threat import ThreatModel

    if attack:
        name = ATTACKS.canonical(attack)
        inst = ATTACKS.get(name)(ThreatModel(), **(attack_options or {}))  # typed options fail here, before any work
        # the typed values (``--set steps=5`` gives the int 5, as the Python API does): same job, same fingerprint
        typed = {k: getattr(inst.options, k) for k in (attack_options or {})}
        return single_attack_suite(name, typed)
    if attack_options:
        raise UserError("--set for attacks needs --attack NAME (suites have fixed settings)")
    return SUITES.get(suite or "pgd")


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"


_MODULE_SPEC = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_ATTR_SPEC = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _import_model_source(spec: str) -> tuple[Any, str]:
    """The module named by ``spec``'s part before the last ``:`` and the attribute path after it.

    ``pkg.module:factory`` imports an importable module (``sys.path`` as it is: the working directory is
    not added); ``path/to/file.py:factory`` loads exactly that file. Either way the code is the user's own
    choice on the command line: advbench never imports a module named by a file it reads.
    """
    import importlib
    import importlib.util

    mod_name, sep, attr = spec.rpartition(":")
    if not sep or not mod_name or not _ATTR_SPEC.match(attr):
        raise UserError(f"--model-module {spec!r} must be pkg.module:factory or path/to/file.py:factory "
                        "(e.g. mymodels.nets:make_model)")
    if mod_name.endswith(".py"):
        path = Path(mod_name)
        if not path.is_file():
            raise UserError(f"--model-module {spec}: no such file {path}")
        name = "advbench_user_model_" + re.sub(r"\W", "_", path.stem)
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise UserError(f"--model-module {spec}: {path} is not a Python module")
        module = importlib.util.module_from_spec(loader_spec)
        try:
            loader_spec.loader.exec_module(module)
        except Exception as err:  # noqa: BLE001 - the user's file failed; say so in one line
            raise UserError(f"--model-module {spec}: running {path} raised {type(err).__name__}: {err}") from None
        return module, attr
    if not _MODULE_SPEC.match(mod_name):
        raise UserError(f"--model-module {spec!r}: '{mod_name}' is not a module name; use pkg.module:factory or "
                        "path/to/file.py:factory")
    try:
        return importlib.import_module(mod_name), attr
    except ImportError as err:
        raise UserError(f"cannot import '{mod_name}' for --model-module: {err} (a module in the working directory: "
                        f"give its file, {mod_name.replace('.', '/')}.py:{attr}, or set PYTHONPATH)") from None
    except Exception as err:  # noqa: BLE001 - importing the user's module failed
        raise UserError(f"--model-module {spec}: importing '{mod_name}' raised {type(err).__name__}: {err}") from None


def load_model_module(spec: str, checkpoint: str | Path | None = None, device: Any = "cpu") -> Any:
    """Build a model from ``pkg.module:factory`` or ``path/to/file.py:factory`` (a callable returning an
    ``nn.Module``, or a module object) and load a state dict from ``checkpoint`` (its ``model`` or
    ``state_dict`` entry, or the dict itself).

    This imports and runs that code: call it only with a spec the user typed (never one read from a file).
    """
    from torch import nn

    module, attr = _import_model_source(str(spec))
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"'{module.__name__}' has no attribute '{attr}' (--model-module {spec})")
        obj = getattr(obj, part)
    if not isinstance(obj, nn.Module):
        if not callable(obj):
            raise UserError(f"--model-module {spec} is neither a model nor a callable returning one")
        try:
            obj = obj()
        except Exception as err:  # noqa: BLE001 - the user's factory failed; say so in one line
            first = (str(err).splitlines() or [""])[0]
            raise UserError(f"--model-module {spec}: the factory raised {type(err).__name__}: {first} (it must "
                            "take no arguments and return an nn.Module)") from None
        if not isinstance(obj, nn.Module):
            raise UserError(f"--model-module {spec} returned {type(obj).__name__}, not a torch.nn.Module")
    if checkpoint is not None:
        ckpt = runs.load_checkpoint(checkpoint, map_location="cpu")
        state = ckpt
        if isinstance(ckpt, dict):
            state = ckpt.get("model", ckpt.get("state_dict", ckpt))
        try:
            obj.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError, ValueError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(f"--checkpoint {checkpoint}: weights do not fit the model ({first})") from None
    return obj.to(device).eval()


def _external_record(name: str, dataset: str, eps: str, norm: str, seed: int, spec: str | None,
                     checkpoint: str | None) -> dict[str, Any]:
    """config.json for a directory of results on a model advbench did not train (so reports can read it)."""
    from advbench.config import config_to_dict

    cfg = TrainConfig(dataset=dataset, model=name, defense=f"external:{name}", eps=eps, norm=norm, seed=seed)  # type: ignore[arg-type]
    return {"kind": "external", "config": config_to_dict(cfg), "model_module": spec, "checkpoint": checkpoint,
            "versions": runs.package_versions()}


def _load_source(source: Any, dev: Any) -> tuple[Any, dict[str, Any] | None]:
    """The transfer source: a run directory (its best checkpoint) or a model object."""
    from torch import nn

    if source is None:
        return None, None
    if isinstance(source, nn.Module):
        return source.to(dev).eval(), {"model": type(source).__name__}
    src = runs.resolve_run(source)
    model, _record = _load_any_run_model(src, "best", dev)
    ckpt = src / "checkpoints" / "best.pt"
    epoch = runs.load_checkpoint(ckpt).get("epoch") if ckpt.is_file() else None
    return model, {"run": str(src), "checkpoint": "best", "epoch": epoch}


def _load_any_run_model(run_dir: Path, checkpoint: str, dev: Any) -> tuple[Any, dict[str, Any]]:
    """A trained run's model, or an external-model directory's model (rebuilt from its module spec)."""
    record = runs.read_json(run_dir / "config.json")
    if record.get("kind") == "external":
        # the folder names the code that built its model; running it would let whoever hands over a results
        # folder run code here, so the user must name that code on the command line themselves
        spec = record.get("model_module")
        if not spec or not isinstance(spec, str):
            raise UserError(f"{run_dir} holds results of a Python-API model; attack it with advbench.evaluate(model)")
        raise UserError(f"{run_dir} holds results of an external model; advbench does not run code named in a "
                        f"results folder: if you trust it, type 'advbench attack --model-module {spec} "
                        f"--out {run_dir} --dataset DATASET' yourself")
    from advbench.engine.train import load_run_model

    return load_run_model(run_dir, checkpoint, dev)


def _run_job(model: Any, data: Any, *, the_suite: Any, threats: list[Any], n_eval: int, batch_size: int, seed: int,
             described: dict[str, Any] | None, out_dir: Path, dev: Any, source_model: Any,
             source_desc: dict[str, Any] | None, hygiene: bool, force: bool, quiet: bool, stop: Any,
             batch_hook: Any, attack_hook: Any) -> dict[str, Any]:
    """Shared tail of :func:`attack` and :func:`evaluate`: build the job, reuse a stored result, run, write."""
    from advbench.attacks.base import AttackContext
    from advbench.engine import distributed
    from advbench.engine.evaluate import EvalJob, evaluate_suite, identity_of
    from advbench.engine.progress import make_progress
    from advbench.engine.signals import StopFlag, stop_on_signals

    job = EvalJob(suite=the_suite, threats=threats, n_eval=n_eval, batch_size=batch_size, seed=seed,
                  source=described, transfer_source=source_desc, hygiene=hygiene,
                  available=frozenset({"source_model"} if source_model is not None else set()),
                  identity=identity_of(model, data, n_eval, source_model))
    if not job.entries():
        reasons = "; ".join(f"{s['label']}: {s['reason']}" for s in job.skipped())
        raise UserError(f"nothing to run in suite '{the_suite.name}' ({reasons})")
    out_file = out_dir / "attacks" / f"{the_suite.name}.json"
    existing = None
    if distributed.is_main() and out_file.is_file() and not force:
        stored = runs.read_json(out_file)
        existing = stored if stored.get("fingerprint") == job.fingerprint() else None
    existing = distributed.broadcast_object(existing)  # every rank takes the same branch
    if existing is not None:
        return existing
    flag = stop or StopFlag()
    context = AttackContext(source_model=source_model, source=source_desc, hook=attack_hook)
    with contextlib.ExitStack() as stack:
        # rank 0 holds the run's lock for all ranks; the others write only their own shard files
        error = None
        if distributed.is_main():
            try:
                stack.enter_context(runs.RunLock(out_dir, f"attack {the_suite.name}"))
            except UserError as err:
                error = str(err)
        error = distributed.broadcast_object(error)
        if error:
            raise UserError(error)
        progress = stack.enter_context(make_progress(quiet or not distributed.is_main()))
        stack.enter_context(stop_on_signals(flag))
        return evaluate_suite(model, data, job, out_file, device=dev, progress=progress, stop=flag,
                              batch_hook=batch_hook, context=context)


@contextlib.contextmanager
def _main_rank_first(download: bool) -> Any:
    """With ``download`` under several processes: rank 0 fetches the data, the others then read it."""
    from advbench.engine import distributed

    first = bool(download) and distributed.is_distributed()
    if first and not distributed.is_main():
        distributed.barrier()
    yield
    if first and distributed.is_main():
        distributed.barrier()


def _eval_device(device: str) -> Any:
    """The evaluation device; under torchrun with several processes, ``cuda`` means this rank's GPU."""
    import torch

    from advbench.engine import distributed
    from advbench.engine.common import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda" and distributed.env_world_size() > 1:
        if dev.index is None:
            dev = torch.device("cuda", distributed.local_rank())
        torch.cuda.set_device(dev)
    return dev


def _threats(eps: str | None, norm: str, default_eps: str) -> list[Any]:
    from advbench.threat import ThreatModel, parse_eps_list

    return [ThreatModel.parse(e, norm) for _, e in parse_eps_list(eps)] if eps else [ThreatModel.parse(default_eps,
                                                                                                      norm)]


def attack(run: str | Path, *, suite: str | None = "pgd", attack: str | None = None,
           attack_options: dict[str, Any] | list[str] | None = None, eps: str | None = None,
           norm: str | None = None, n_eval: int = 1000, batch_size: int = 256, seed: int = 0,
           checkpoint: str = "best", device: str = "auto", force: bool = False, quiet: bool = True,
           stop: Any = None, batch_hook: Any = None, source: str | Path | Any = None, hygiene: bool = True,
           attack_hook: Any = None) -> dict[str, Any]:
    """Attack a trained run with a suite (or one ``attack``); writes and returns attacks/<suite>.json.

    ``source`` (a run directory or a model) is the model transfer attacks are crafted on; ``hygiene``
    runs the model probe behind the checks; ``attack_hook(event, **info)`` sees attack-internal
    checkpoints (AutoAttack components).
    """
    from advbench.data import load_splits
    from advbench.engine import distributed

    run_dir = runs.resolve_run(run)
    if n_eval < 1 or batch_size < 1:
        raise UserError("--n-eval and --batch-size must be >= 1")
    opts = parse_set_options(attack_options) if isinstance(attack_options, list) else attack_options
    the_suite = _suite_for(suite, attack, opts)
    record = runs.read_json(run_dir / "config.json")
    cfg = TrainConfig(**record["config"])
    threats = _threats(eps, norm or cfg.norm, cfg.eps)
    dev = _eval_device(device)
    with distributed.process_group(dev):  # torchrun: each rank evaluates a shard
        model, _ = _load_any_run_model(run_dir, checkpoint, dev)
        ckpt_epoch = None
        if checkpoint in {"best", "last"} and record.get("kind") != "external":
            ckpt_epoch = runs.load_checkpoint(run_dir / "checkpoints" / f"{checkpoint}.pt").get("epoch")
        with _main_rank_first(cfg.download):
            splits = load_splits(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download, n_train=cfg.n_train,
                                 val_size=cfg.val_size, split_seed=cfg.split_seed, n_test=n_eval,
                                 options=cfg.dataset_options)
        source_model, source_desc = _load_source(source, dev)
        return _run_job(model, splits.test, the_suite=the_suite, threats=threats, n_eval=n_eval,
                        batch_size=batch_size, seed=seed,
                        described={"run": run_dir.name, "checkpoint": checkpoint, "epoch": ckpt_epoch},
                        out_dir=run_dir, dev=dev, source_model=source_model, source_desc=source_desc, hygiene=hygiene,
                        force=force, quiet=quiet, stop=stop, batch_hook=batch_hook, attack_hook=attack_hook)


def evaluate(model: Any, *, dataset: Any = "synthetic", suite: str | None = "pgd", attack: str | None = None,
             attack_options: dict[str, Any] | list[str] | None = None, eps: str | None = "8/255", norm: str = "linf",
             n_eval: int = 1000, batch_size: int = 256, seed: int = 0, out: str | Path = "runs/external",
             name: str | None = None, checkpoint: str | Path | None = None, source: Any = None,
             data_dir: str | None = None, download: bool = False, dataset_options: dict[str, Any] | None = None,
             device: str = "auto", force: bool = False, quiet: bool = True, stop: Any = None, batch_hook: Any = None,
             hygiene: bool = True, attack_hook: Any = None) -> dict[str, Any]:
    """Evaluate any model (inputs in [0, 1], logits out) with a suite; same result and JSON as ``advbench attack``.

    ``model``: an ``nn.Module`` or a ``pkg.module:factory`` spec (with optional ``checkpoint``).
    ``dataset``: a registered dataset name (its test split) or ``(x, y)`` tensors (uint8 or [0, 1] floats).
    Writes ``out/attacks/<suite>.json`` (and ``out/config.json`` describing the model, so that
    ``advbench report out`` shows it). ``source``: a model or run directory for transfer attacks.
    """
    from advbench.engine import distributed
    from advbench.threat import parse_norm

    if n_eval < 1 or batch_size < 1:
        raise UserError("n_eval and batch_size must be >= 1")
    spec = model if isinstance(model, str) else None
    label = name or (spec.split(":")[-1] if spec else type(model).__name__)
    opts = parse_set_options(attack_options) if isinstance(attack_options, list) else attack_options
    the_suite = _suite_for(suite, attack, opts)
    the_norm = parse_norm(norm)
    threats = _threats(eps, the_norm, "8/255")
    dev = _eval_device(device)
    with distributed.process_group(dev):  # torchrun: each rank evaluates a shard
        net = load_model_module(model, checkpoint, dev) if spec is not None else model.to(dev).eval()
        if isinstance(dataset, str):
            from advbench.data import load_splits

            with _main_rank_first(download):
                data: Any = load_splits(dataset, data_dir=data_dir, download=download, n_test=n_eval,
                                        options=dataset_options).test
            dataset_name = dataset
        else:
            data, dataset_name = dataset, "custom"
        out_dir = Path(out)
        if distributed.is_main() and not runs.is_run_dir(out_dir):
            runs.check_out_dir(out_dir)
            runs.write_json(out_dir / "config.json", _external_record(
                label, dataset_name, threats[0].eps_text, the_norm, seed, spec,
                str(checkpoint) if checkpoint else None))
        distributed.barrier()
        source_model, source_desc = _load_source(source, dev)
        described = {"model": label, "model_module": spec, "checkpoint": str(checkpoint) if checkpoint else None,
                     "dataset": dataset_name}
        return _run_job(net, data, the_suite=the_suite, threats=threats, n_eval=n_eval, batch_size=batch_size,
                        seed=seed, described=described, out_dir=out_dir, dev=dev, source_model=source_model,
                        source_desc=source_desc, hygiene=hygiene, force=force, quiet=quiet, stop=stop,
                        batch_hook=batch_hook, attack_hook=attack_hook)


def report(paths: list[str | Path], *, fmt: str = "markdown", suite: str | None = None,
           output: str | Path | None = None, grid: str | None = None, paper: bool = False,
           plots: str | Path | None = None) -> tuple[Any, str]:
    """Build the comparison grid of the runs under ``paths``; returns (grid DataFrame, rendered text).

    ``grid="soar:table1"`` lays the runs out as that paper table (``paper``: published numbers beside);
    ``plots``: a directory for PNG plots (embedded in ``fmt="html"``).
    """
    if grid or paper or plots or fmt == "html":
        return _paper_report(paths, fmt=fmt, suite=suite, output=output, grid=grid, paper=paper, plots=plots)
    from advbench.report import FORMATS, comparison_grid, load_frame, render

    if fmt not in FORMATS:
        hint = closest(fmt, list(FORMATS))
        raise UserError(f"unknown format '{fmt}'" + (f"; did you mean {hint[0]!r}?" if hint else
                                                      f"; choose one of {', '.join(FORMATS)}"))
    frame = load_frame(list(paths))
    if frame.empty:
        raise UserError(f"no attack results under {', '.join(map(str, paths))}; run 'advbench attack RUN' first")
    grid = comparison_grid(frame, suite)
    caption = _caption(frame)
    text = render(grid, fmt, caption, frame)
    if output:
        with runs.atomic_path(output) as tmp:
            tmp.write_text(text)
    return grid, text


def _caption(frame: Any) -> str:
    parts = []
    for col, name in (("dataset", "dataset"), ("model", "model"), ("suite", "suite")):
        vals = sorted(map(str, frame[col].dropna().unique()))
        parts.append(f"{name}: {', '.join(vals)}")
    eps = sorted({f"{n} {e}" for n, e in zip(frame["norm"], frame["eps"], strict=True) if isinstance(e, str) and e})
    parts.append(f"threat: {', '.join(eps)}")
    parts.append(f"n-eval: {', '.join(map(str, sorted(frame['n'].unique())))} (first N test images)")
    return "Accuracy (%) — " + "; ".join(parts) + "; mean ± std over seeds"


def _paper_report(paths: list[str | Path], *, fmt: str, suite: str | None, output: str | Path | None,
                  grid: str | None, paper: bool, plots: str | Path | None) -> tuple[Any, str]:
    """Report with a paper grid (``--grid``), published numbers (``--paper``), plots or html."""
    from advbench.report import comparison_grid, load_frame
    from advbench.report.paper_grids import (
        PAPER_FORMATS,
        build_paper_grid,
        display_frame,
        parse_grid_spec,
        render_paper_grid,
    )

    if fmt not in PAPER_FORMATS:
        hint = closest(fmt, list(PAPER_FORMATS))
        raise UserError(f"unknown format '{fmt}'" + (f"; did you mean {hint[0]!r}?" if hint else
                                                      f"; choose one of {', '.join(PAPER_FORMATS)}"))
    if paper and not grid:
        raise UserError("--paper needs --grid PAPER:TABLE (e.g. --grid soar:table1); see 'advbench reproduce --list'")
    frame = load_frame(list(paths))
    if suite is not None and not frame.empty:
        frame = frame[frame["suite"] == suite]
    if frame.empty and not grid:
        raise UserError(f"no attack results under {', '.join(map(str, paths))}; run 'advbench attack RUN' first")
    pngs: list[Path] = []
    if plots or (fmt == "html" and output):  # html to stdout embeds plots only when --plots names a directory
        from advbench.report.plots import write_plots

        plot_dir = Path(plots) if plots else Path(output).parent / "plots"
        if not frame.empty:
            pngs = write_plots(frame, plot_dir)
    if grid:
        pg = build_paper_grid(frame, *parse_grid_spec(grid))
        text = render_paper_grid(pg, fmt, paper=paper, plots=pngs)
        table = display_frame(pg, paper=paper, bold="")
    else:
        from advbench.report import render
        from advbench.report.html import html_page

        table = comparison_grid(frame, suite)
        text = html_page(_caption(frame), table, [], pngs) if fmt == "html" else render(table, fmt, _caption(frame),
                                                                                         frame)
    if output:
        with runs.atomic_path(output) as tmp:
            tmp.write_text(text)
    return table, text


def reproduce(paper: str, table: str, *, scale: str = "smoke", out: str | Path = "runs",
              dataset: str | None = None, model: str | None = None, seeds: list[int] | None = None,
              rows: list[str] | None = None, dry_run: bool = False, jobs: int = 1, fmt: str = "markdown",
              show_paper: bool = True, device: str = "auto", quiet: bool = True, output: str | Path | None = None,
              smoke: dict[str, Any] | None = None, log: Any = None, threads: int | None = None) -> tuple[Any, str]:
    """Reproduce a paper table: plan its runs, skip finished ones (content hash), train/resume and attack the
    rest, then render the grid with published numbers beside. ``dry_run``: return (plan, plan text) only.
    ``threads``: torch CPU threads per process (on a shared or small CPU box 1 avoids oversubscription)."""
    from advbench.papers.reproduce import make_plan, run_plan

    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    plan = make_plan(paper, table, scale=scale, out=out, dataset=dataset, model=model, seeds=seeds, rows=rows,
                     device=device, smoke=smoke)
    if dry_run:
        return plan, plan.describe() + "\n"
    dirs = run_plan(plan, jobs=jobs, quiet=quiet, device=device, log=log, threads=threads)
    spec = f"{plan.recipe.paper}:{plan.recipe.table}"
    if not dirs:
        raise UserError(f"{spec}: no runs planned (check --rows)")
    return report(dirs, fmt=fmt, grid=spec, paper=show_paper, output=output,
                  plots=(Path(output).parent / "plots") if output and fmt == "html" else None)

