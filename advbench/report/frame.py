"""Read run directories into one tidy pandas DataFrame (one row per run, eps and attack column)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from advbench import runs
from advbench.config import RUNTIME_KEYS

#: options that never make two runs different configurations (seeds are averaged over; speed and
#: distributed settings, absent from runs made before they existed, do not define the method)
_IGNORED = {"seed", "device", "data_dir", "download", "init_from"} | RUNTIME_KEYS


def _defense_label(record: dict[str, Any]) -> str:
    """Defense name plus the options that differ from the defense's defaults, e.g. ``trades (beta=9)``."""
    cfg = record["config"]
    opts = cfg.get("defense_options") or {}
    if not opts:
        return cfg["defense"]
    inner = ", ".join(f"{k}={v}" for k, v in sorted(opts.items()))
    return f"{cfg['defense']} ({inner})"


def _config_key(record: dict[str, Any]) -> str:
    cfg = {k: v for k, v in record["config"].items() if k not in _IGNORED}
    return json.dumps(cfg, sort_keys=True, default=str)


def load_frame(paths: list[str | Path]) -> pd.DataFrame:
    """Tidy frame of every attack result under ``paths`` (run dirs or their parents).

    Columns: run, config_key, defense, label, dataset, model, norm, eps, seed, suite, attack, kind
    (clean / attack / robust), accuracy, n, seconds, checks (the suite's hygiene status: pass / warn /
    fail, None for results stored before checks existed) and flagged (names of the non-passing checks).
    """
    rows: list[dict[str, Any]] = []
    for run in runs.find_runs(list(paths)):
        record = runs.read_json(run / "config.json")
        cfg = record["config"]
        base = {
            "run": str(run), "config_key": _config_key(record), "defense": cfg["defense"],
            "label": _defense_label(record), "dataset": cfg["dataset"], "model": cfg["model"],
            "train_norm": cfg["norm"], "train_eps": cfg["eps"], "seed": cfg["seed"],
        }
        for f in sorted((run / "attacks").glob("*.json")) if (run / "attacks").is_dir() else []:
            res = runs.read_json(f)
            checks = res.get("checks") or {}
            common = {**base, "suite": res["suite"], "n": res["n_eval"], "checks": checks.get("status"),
                      "flagged": ",".join(checks.get("flagged", []))}
            rows.append({**common, "kind": "clean", "attack": "Clean", "norm": None, "eps": None,
                         "accuracy": res["clean"]["accuracy"], "seconds": None})
            for r in res["results"]:
                rows.append({**common, "kind": "attack", "attack": r["label"], "norm": r["norm"], "eps": r["eps"],
                             "accuracy": r["accuracy"], "seconds": r["seconds"],
                             "n": r.get("n", res["n_eval"])})  # an entry may attack a subset
            for r in res["robust"]:
                rows.append({**common, "kind": "robust", "attack": "Worst case", "norm": r["norm"], "eps": r["eps"],
                             "accuracy": r["accuracy"], "seconds": None})
    return pd.DataFrame(rows)
