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


#: the columns of the frame (also of an empty one, so that grids built from no results still find them)
COLUMNS = ["run", "run_time", "config_key", "defense", "label", "dataset", "model", "train_norm", "train_eps", "seed",
           "suite", "n", "checks", "flagged", "kind", "attack", "norm", "eps", "accuracy", "seconds", "checkpoint"]


def _run_base(run: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.json record, the columns every row of this run shares); CorruptFile/KeyError/TypeError if broken."""
    record = runs.read_run_config(run)
    cfg = record["config"]
    base = {
        "run": str(run), "config_key": _config_key(record), "defense": cfg["defense"],
        "label": _defense_label(record), "dataset": cfg["dataset"], "model": cfg["model"],
        "train_norm": cfg["norm"], "train_eps": cfg["eps"], "seed": cfg["seed"],
        "run_time": (run / "config.json").stat().st_mtime,
    }
    return record, base


def _result_rows(res: Any, base: dict[str, Any]) -> list[dict[str, Any]]:
    """The clean, per-attack and worst-case rows of one result JSON (KeyError/TypeError if it is malformed)."""
    if not isinstance(res, dict):
        raise TypeError("not a JSON object")
    checks = res.get("checks") or {}
    source = res.get("source") if isinstance(res.get("source"), dict) else {}
    common = {**base, "suite": str(res["suite"]), "n": int(res["n_eval"]), "checks": checks.get("status"),
              "flagged": ",".join(checks.get("flagged", [])), "checkpoint": source.get("checkpoint")}
    rows = [{**common, "kind": "clean", "attack": "Clean", "norm": None, "eps": None,
             "accuracy": float(res["clean"]["accuracy"]), "seconds": None}]
    for r in res["results"]:
        rows.append({**common, "kind": "attack", "attack": str(r["label"]), "norm": r["norm"], "eps": r["eps"],
                     "accuracy": float(r["accuracy"]), "seconds": r.get("seconds"),
                     "n": int(r.get("n", res["n_eval"])), "verdict": _verdict(r)})  # an entry may attack a subset
    for kind, label, block in (("robust", "Worst case", "robust"), ("adapted", "Worst case (adapted)", "adapted")):
        for r in res.get(block) or []:
            rows.append({**common, "kind": kind, "attack": label, "norm": r["norm"], "eps": r["eps"],
                         "accuracy": float(r["accuracy"]), "seconds": None, "verdict": _verdict(r)})
    return rows


#: the prefix of a certification's ``suite`` in the frame (``certify:smoothing-sigma0.25``)
CERTIFY_SUITE = "certify:"


def _certified_rows(res: Any, base: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``certified`` rows of one RUN/certify/NAME.json: the certified accuracy at each radius (eps), labelled
    by the method (``Smoothing σ=0.25``, ``L-bound``, ``ω-bound``); KeyError/TypeError if it is malformed."""
    if not isinstance(res, dict):
        raise TypeError("not a JSON object")
    source = res.get("source") if isinstance(res.get("source"), dict) else {}
    common = {**base, "suite": CERTIFY_SUITE + str(res["name"]), "n": int(res["n_eval"]), "checks": None,
              "flagged": "", "checkpoint": source.get("checkpoint"), "kind": "certified", "attack": str(res["label"]),
              "norm": str(res["norm"]), "seconds": res.get("seconds")}
    return [{**common, "eps": str(r["eps"]), "accuracy": float(r["accuracy"]), "n": int(r.get("n", res["n_eval"]))}
            for r in res["certified"]]


def _verdict(r: dict[str, Any]) -> str | None:
    """A number's verdict in plain words (None for results stored before verdicts existed)."""
    v = r.get("verdict")
    return str(v["summary"]) if isinstance(v, dict) and "summary" in v else None


def load_frame(paths: list[str | Path], *, checkpoints: bool = False) -> pd.DataFrame:
    """Tidy frame of every attack result under ``paths`` (run dirs or their parents).

    Columns: run, config_key, defense, label, dataset, model, norm, eps, seed, suite, attack, kind
    (clean / attack / robust / adapted: the worst case with ``--adapt``'s attacks / certified: a certification's
    certified accuracy at the radius ``eps``, from ``RUN/certify/NAME.json``, suite ``certify:NAME``), accuracy, n,
    seconds,
    checks (the suite's hygiene status: pass / warn / fail, None for results stored before checks existed),
    flagged (names of the non-passing checks) and verdict (the number's verdict in plain words: "trustworthy",
    "likely inflated: ...", "not meaningful: ..."; None for the clean row and older results).

    ``checkpoints``: also the results of kept epoch checkpoints (``attacks/SUITE@epoch-N.json``; column
    ``checkpoint``), which only a paper grid with a per-checkpoint rule uses.

    A broken run (unreadable or malformed ``config.json``) or result file is left out, and named with the
    reason in ``frame.attrs["skipped"]`` (a list of "path: reason"), so one broken run does not hide the others.
    """
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    found = runs.find_runs(list(paths))
    for run in found:
        try:
            _record, base = _run_base(run)
        except (runs.CorruptFile, runs.MissingFile, runs.UnreadableFile, KeyError, TypeError, ValueError) as err:
            skipped.append(f"{run}: {_reason(err)}")
            continue
        results = sorted(f for f in (run / "attacks").glob("*.json") if not f.name.startswith(".")
                         and (checkpoints or "@" not in f.name)) if (run / "attacks").is_dir() else []
        for f in results:
            try:
                rows.extend(_result_rows(runs.read_json(f), base))
            except (runs.CorruptFile, runs.UnreadableFile, KeyError, TypeError, ValueError) as err:
                skipped.append(f"{f}: {_reason(err)}")
        certified = sorted(f for f in (run / "certify").glob("*.json") if not f.name.startswith(".")) \
            if (run / "certify").is_dir() else []
        for f in certified:
            try:
                rows.extend(_certified_rows(runs.read_json(f), base))
            except (runs.CorruptFile, runs.UnreadableFile, KeyError, TypeError, ValueError) as err:
                skipped.append(f"{f}: {_reason(err)}")
    frame = pd.DataFrame(rows, columns=COLUMNS) if not rows else _one_run_per_seed(pd.DataFrame(rows), skipped)
    frame.attrs["skipped"] = skipped
    # every run, also those with no attack results (measurements); not the copies counted once above
    once = {line.split(": the same configuration", 1)[0] for line in skipped if line.endswith("(counted once)")}
    frame.attrs["runs"] = [str(r) for r in found if str(r) not in once]
    return frame


def _one_run_per_seed(frame: pd.DataFrame, skipped: list[str]) -> pd.DataFrame:
    """Two runs of one configuration and seed (a rerun, a copy) count once: the newest; the other is named in
    ``skipped``, so that "mean ± std over seeds" never averages one seed with itself."""
    newest = frame.groupby(["config_key", "seed"])["run_time"].transform("max")
    dropped = frame.loc[frame["run_time"] < newest, ["run", "config_key", "seed"]].drop_duplicates("run")
    for _, row in dropped.iterrows():
        keep = frame.loc[(frame["config_key"] == row["config_key"]) & (frame["seed"] == row["seed"]) &
                         (frame["run_time"] == newest), "run"].iloc[0]
        skipped.append(f"{row['run']}: the same configuration and seed as the newer {keep} (counted once)")
    return frame[frame["run_time"] >= newest].reset_index(drop=True)


def _reason(err: Exception) -> str:
    if isinstance(err, KeyError):
        return f"malformed (no {err.args[0]!r})"
    if isinstance(err, runs.CorruptFile | runs.MissingFile | runs.UnreadableFile):
        return str(err).split(": ", 1)[-1] if str(err).startswith("/") else str(err)
    return f"malformed ({err})"
