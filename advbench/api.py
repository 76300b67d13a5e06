"""The Python API. The CLI calls exactly these functions, so notebooks, tests and the CLI share one path."""

from __future__ import annotations

import dataclasses
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
    from advbench.engine.progress import make_progress
    from advbench.engine.signals import StopFlag, stop_on_signals
    from advbench.engine.train import resume_run, start_run

    flag = stop or StopFlag()
    with make_progress(quiet) as progress, stop_on_signals(flag):
        if resume is not None:
            return resume_run(resume, progress=progress, stop=flag, batch_hook=batch_hook,
                              epochs=options.get("epochs"))
        cfg = make_train_config(options, settings, config_file)
        return start_run(cfg, out=out, name=name, command=command, progress=progress, stop=flag,
                         batch_hook=batch_hook)


def _suite_for(suite: str | None, attack: str | None, attack_options: dict[str, Any] | None):
    from advbench.attacks import ATTACKS, SUITES, single_attack_suite

    if attack:
        ATTACKS.get(attack)
        return single_attack_suite(attack, attack_options or {})
    if attack_options:
        raise UserError("--set for attacks needs --attack NAME (suites have fixed settings)")
    return SUITES.get(suite or "pgd")


def attack(run: str | Path, *, suite: str | None = "pgd", attack: str | None = None,
           attack_options: dict[str, Any] | list[str] | None = None, eps: str | None = None,
           norm: str | None = None, n_eval: int = 1000, batch_size: int = 256, seed: int = 0,
           checkpoint: str = "best", device: str = "auto", force: bool = False, quiet: bool = True,
           stop: Any = None, batch_hook: Any = None) -> dict[str, Any]:
    """Attack a trained run with a suite (or one ``attack``); writes and returns attacks/<suite>.json."""
    from advbench.data import load_splits
    from advbench.engine.common import resolve_device
    from advbench.engine.evaluate import EvalJob, evaluate_suite
    from advbench.engine.progress import make_progress
    from advbench.engine.signals import StopFlag, stop_on_signals
    from advbench.engine.train import load_run_model
    from advbench.threat import ThreatModel, parse_eps_list

    run_dir = runs.resolve_run(run)
    if n_eval < 1 or batch_size < 1:
        raise UserError("--n-eval and --batch-size must be >= 1")
    opts = parse_set_options(attack_options) if isinstance(attack_options, list) else attack_options
    the_suite = _suite_for(suite, attack, opts)
    record = runs.read_json(run_dir / "config.json")
    cfg = TrainConfig(**record["config"])
    run_norm = norm or cfg.norm
    threats = [ThreatModel.parse(e, run_norm) for _, e in parse_eps_list(eps)] if eps else \
        [ThreatModel.parse(cfg.eps, run_norm)]
    dev = resolve_device(device)
    model, _ = load_run_model(run_dir, checkpoint, dev)
    ckpt_epoch = None
    if checkpoint in {"best", "last"}:
        ckpt_epoch = runs.load_checkpoint(run_dir / "checkpoints" / f"{checkpoint}.pt").get("epoch")
    splits = load_splits(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download, n_train=cfg.n_train,
                         val_size=cfg.val_size, split_seed=cfg.split_seed, n_test=n_eval, options=cfg.dataset_options)
    job = EvalJob(suite=the_suite, threats=threats, n_eval=n_eval, batch_size=batch_size, seed=seed,
                  source={"run": run_dir.name, "checkpoint": checkpoint, "epoch": ckpt_epoch})
    out_file = run_dir / "attacks" / f"{the_suite.name}.json"
    if out_file.is_file() and not force:
        existing = runs.read_json(out_file)
        if existing.get("fingerprint") == job.fingerprint():
            return existing
    flag = stop or StopFlag()
    with runs.RunLock(run_dir, f"attack {the_suite.name}"), make_progress(quiet) as progress, \
            stop_on_signals(flag):
        return evaluate_suite(model, splits.test, job, out_file, device=dev, progress=progress, stop=flag,
                              batch_hook=batch_hook)


def report(paths: list[str | Path], *, fmt: str = "markdown", suite: str | None = None,
           output: str | Path | None = None) -> tuple[Any, str]:
    """Build the comparison grid of the runs under ``paths``; returns (grid DataFrame, rendered text)."""
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
    eps = sorted({f"{n} {e}" for n, e in zip(frame["norm"], frame["eps"], strict=True) if e})
    parts.append(f"threat: {', '.join(eps)}")
    parts.append(f"n-eval: {', '.join(map(str, sorted(frame['n'].unique())))} (first N test images)")
    return "Accuracy (%) — " + "; ".join(parts) + "; mean ± std over seeds"
