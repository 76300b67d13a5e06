"""Resolve a training config: defaults < TOML recipe < explicit options < ``--set`` settings, with every defense,
model and dataset option typed and validated. The API trains from it and paper plans hash it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from advbench.config import TRAIN_KEYS, TrainConfig, apply_overrides, field_types, load_toml, parse_set_options
from advbench.data import DATASETS
from advbench.defenses import DEFENSES, build_defense, options_for_dataset
from advbench.errors import UserError
from advbench.models import MODELS
from advbench.registry import closest
from advbench.threat import ThreatModel


def split_overrides(defense: str, settings: dict[str, Any]) -> tuple[dict, dict, dict, dict]:
    """Route ``--set`` keys to the train config, defense, model or dataset options.

    ``model.X`` / ``data.X`` / ``defense.X`` prefixes are explicit; bare keys go to the train config when
    they name one of its fields, otherwise to the defense's options.
    """

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
        # type-check the recipe's own values, also those a flag overrides: a wrong recipe is wrong either way
        apply_overrides(TrainConfig(), {k: v for k, v in recipe.items() if k in TRAIN_KEYS}, f"--config {config_file}")
        merged.update(recipe)
    merged.update({k: v for k, v in (options or {}).items() if v is not None})
    sets = parse_set_options(settings) if isinstance(settings, list) else dict(settings or {})
    defense = str(merged.get("defense", TrainConfig.defense))

    defense = DEFENSES.canonical(defense)  # fail early on an unknown defense, with suggestions
    merged["defense"] = defense
    train, dopts, mopts, dsopts = split_overrides(defense, sets)
    merged.update(train)
    for key, extra in (("defense_options", dopts), ("model_options", mopts), ("dataset_options", dsopts)):
        merged[key] = {**(merged.get(key) or {}), **extra}
    unknown = set(merged) - TRAIN_KEYS
    if unknown:
        name = sorted(unknown)[0]
        hint = closest(name, sorted(TRAIN_KEYS))
        raise UserError(f"unknown config key '{name}'" + (f"; did you mean {hint[0]!r}?" if hint else ""))
    cfg = apply_overrides(TrainConfig(), merged, "train")
    # registry names as listed (run names and content hashes use them), ranges checked before any work
    cfg = dataclasses.replace(cfg, model=MODELS.canonical(cfg.model), dataset=DATASETS.canonical(cfg.dataset))
    cfg.validate()
    # validate defense options now (typed), and store them converted

    # dataset-dependent defaults (SCORPIO's (h, r) preset) unless set: stored, so config.json says what ran
    cfg = dataclasses.replace(cfg, defense_options=options_for_dataset(cfg.defense, cfg.dataset, cfg.defense_options))
    threat = ThreatModel.parse(cfg.eps, cfg.norm)
    d = build_defense(cfg.defense, threat, cfg.defense_options)
    given = {k: getattr(d.options, k) for k in cfg.defense_options}
    return dataclasses.replace(cfg, defense_options=given)
