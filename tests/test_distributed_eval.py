"""Sharded evaluation (gloo on CPU, 2 processes): the same per-sample results as 1 process, resumable shards.

Rank r of W evaluates the global batches r, r + W, ... and rank 0 merges them in batch order; every batch
is cut and seeded by its global index, so the merged JSON equals the 1-process JSON (timings aside).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from test_attacks_models import SmallNet, small_problem

from advbench import api, runs
from advbench.core.signals import Interrupted, StopFlag

N, BS = 64, 22  # global batches of 22, 22, 20 images: rank 0 takes 0 and 2, rank 1 takes 1
PGD = {"suite": "pgd-lite", "n_eval": N, "batch_size": BS, "eps": "8/255", "device": "cpu"}
AA = {"attack": "autoattack", "attack_options": {"n_queries": 50, "n_target_classes": 3}, "n_eval": N,
      "batch_size": BS, "eps": "6/255", "device": "cpu", "hygiene": False}
VOLATILE = {"created", "world_size", "seconds", "versions"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, state: dict, x: torch.Tensor, y: torch.Tensor, jobs: list[dict],
            log_dir: str) -> None:
    """One rank: join the gloo group through torchrun's variables and run ``jobs`` (api.evaluate calls)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    model = SmallNet()
    model.load_state_dict(state)
    outcomes = []
    for job in jobs:
        kwargs = dict(job["kwargs"])
        flag = StopFlag()
        stop_at, kill_at = job.get("stop_at"), job.get("kill_at")
        if stop_at and stop_at[0] == rank:  # Ctrl-C on this rank after the given (attack, global batch)

            def stop_hook(key, b, at=stop_at, flag=flag):
                if (key, b) == tuple(at[1:]):
                    flag.request("test")

            kwargs["batch_hook"] = stop_hook
        if kill_at and kill_at[0] == rank:  # SIGKILL this rank inside AutoAttack, after a component of a batch

            def hook(event, key, batch, component, at=kill_at):
                if (batch, component) == tuple(at[1:]):
                    os.kill(os.getpid(), signal.SIGKILL)

            kwargs["attack_hook"] = hook
        try:
            api.evaluate(model.eval(), dataset=(x, y), out=job["out"], stop=flag, **kwargs)
            outcomes.append("done")
        except Interrupted as err:
            outcomes.append(f"interrupted: {err}")
        Path(log_dir, f"rank{rank}.json").write_text(json.dumps(outcomes))


def _spawn(tmp_path: Path, problem: tuple, jobs: list[dict], world: int = 2) -> list[list[str]]:
    """Run ``jobs`` on ``world`` gloo processes; each rank's outcomes (a SIGKILLed rank's stop at its death)."""
    model, x, y = problem
    log_dir = tmp_path / f"logs-{_free_port()}"
    log_dir.mkdir()
    try:
        mp.spawn(_worker, args=(world, _free_port(), model.state_dict(), x, y, jobs, str(log_dir)), nprocs=world)
    except mp.ProcessExitedException as err:
        if "SIGKILL" not in str(err):
            raise
    return [json.loads(f.read_text()) if (f := log_dir / f"rank{r}.json").is_file() else [] for r in range(world)]


def _drop(obj):
    if isinstance(obj, dict):
        return {k: _drop(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, (list, tuple)):
        return [_drop(v) for v in obj]
    return obj


def _stable(result: dict) -> str:
    """The result as JSON text without timings, creation time and world size (equal across world sizes)."""
    return json.dumps(_drop(result), sort_keys=True)


@pytest.fixture(scope="module")
def problem():
    return small_problem(N)


@pytest.fixture(scope="module")
def reference(problem, tmp_path_factory):
    """1-process results of the pgd-lite suite (with hygiene probe) and of AutoAttack."""
    model, x, y = problem
    root = tmp_path_factory.mktemp("reference")
    return {"pgd": api.evaluate(model, dataset=(x, y), out=root / "pgd", **PGD),
            "aa": api.evaluate(model, dataset=(x, y), out=root / "aa", **AA)}


@pytest.fixture(scope="module")
def sharded(problem, tmp_path_factory):
    """One 2-process launch: pgd-lite and AutoAttack uninterrupted, pgd-lite stopped on rank 0 (Ctrl-C),
    then AutoAttack with rank 1 SIGKILLed inside its batch."""
    root = tmp_path_factory.mktemp("sharded")
    logs = _spawn(root, problem, [{"out": str(root / "two"), "kwargs": PGD}, {"out": str(root / "two"), "kwargs": AA},
                                  {"out": str(root / "stopped"), "kwargs": PGD, "stop_at": [0, "PGD-20", 0]},
                                  {"out": str(root / "killed"), "kwargs": AA, "kill_at": [1, 1, "apgd-ce"]}])
    return root, logs


def test_two_processes_give_exactly_the_one_process_results(sharded, reference):
    root, logs = sharded
    assert [log[:2] for log in logs] == [["done", "done"]] * 2
    out = root / "two"
    pgd = runs.read_json(out / "attacks" / "pgd-lite.json")
    aa = runs.read_json(out / "attacks" / "adhoc-autoattack.json")
    assert pgd["world_size"] == 2 and reference["pgd"]["world_size"] == 1
    assert _stable(pgd) == _stable(reference["pgd"])  # per-sample flags, accuracies, passes, checks, probe
    assert _stable(aa) == _stable(reference["aa"])  # fooled_by per sample too
    assert 0 < aa["results"][0]["accuracy"] < pgd["clean"]["accuracy"]
    assert sorted(p.name for p in (out / "attacks").iterdir()) == ["adhoc-autoattack.json", "pgd-lite.json"]


def test_a_stopped_sharded_run_stops_every_rank_and_resumes_with_one_process(sharded, problem, reference):
    root, logs = sharded
    assert all(log[2].startswith("interrupted") for log in logs), logs
    out = root / "stopped"
    attacks = out / "attacks"
    assert not (attacks / "pgd-lite.json").exists()
    shards = [runs.read_json(attacks / f".pgd-lite.rank{r}-of-2.partial.json") for r in range(2)]
    assert sorted(shards[0]["done"]["clean"]) == ["0", "2"] and sorted(shards[1]["done"]["clean"]) == ["1"]
    assert sorted(shards[0]["done"]["PGD-20"]) == ["0"]  # rank 0 stopped right after this batch
    model, x, y = problem
    ran = []
    res = api.evaluate(model, dataset=(x, y), out=out, batch_hook=lambda key, b: ran.append((key, b)), **PGD)
    assert ("clean", 0) not in ran and ("clean", 1) not in ran and ("PGD-20", 0) not in ran  # from the shards
    assert _stable(res) == _stable(reference["pgd"]) and res["world_size"] == 1
    assert sorted(p.name for p in attacks.iterdir()) == ["pgd-lite.json"]


def test_a_rank_killed_inside_autoattack_resumes_from_its_shard_files(sharded, problem, reference):
    root, logs = sharded
    assert len(logs[1]) == 3  # rank 1 died in the fourth job; rank 0 was stopped by the launcher or finished
    attacks = root / "killed" / "attacks"
    assert not (attacks / "adhoc-autoattack.json").exists()
    key = reference["aa"]["results"][0]["key"]
    shard1 = runs.read_json(attacks / ".adhoc-autoattack.rank1-of-2.partial.json")
    assert sorted(shard1["done"]["clean"]) == ["1"] and not shard1["done"].get(key)
    [state_file] = (attacks / ".adhoc-autoattack.rank1-of-2.state").glob("*.b1.json")  # AutoAttack's own state
    assert runs.read_json(state_file)["done"] == ["apgd-ce"]
    assert _spawn(root, problem, [{"out": str(root / "killed"), "kwargs": AA}]) == [["done"]] * 2
    aa = runs.read_json(attacks / "adhoc-autoattack.json")
    assert aa["results"][0]["summary"]["resumed_batches"] >= 1  # rank 1's batch went on after APGD-CE
    ref = reference["aa"]["results"][0]  # passes differ: the resumed batch did not repeat APGD-CE
    assert aa["results"][0]["correct"] == ref["correct"] and aa["results"][0]["per_sample"] == ref["per_sample"]
    assert aa["robust"] == reference["aa"]["robust"] and aa["clean"] == reference["aa"]["clean"]
    assert sorted(p.name for p in attacks.iterdir()) == ["adhoc-autoattack.json"]


_MODULE = """
import torch
from torch import nn


def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(128, 10))
"""


def test_cli_nproc_relaunches_through_torchrun_and_matches_one_process(tmp_path, monkeypatch):
    (tmp_path / "shardmod.py").write_text(textwrap.dedent(_MODULE))
    monkeypatch.chdir(tmp_path)  # `python -m advbench` (and torchrun -m) import from the working directory
    monkeypatch.syspath_prepend(str(tmp_path))  # this process does not: advbench never adds it itself
    args = ["--model-module", "shardmod:make", "--dataset", "synthetic", "--attack", "pgd", "--set", "steps=5",
            "--n-eval", "30", "--batch-size", "8", "--device", "cpu"]
    system_tmp = tmp_path / "system-tmp"  # the temporary directory of the command and everything it starts
    system_tmp.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(system_tmp)}
    proc = subprocess.run([sys.executable, "-m", "advbench", "attack", *args, "--out", "two", "--nproc", "2"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    left = [p.name for p in system_tmp.iterdir() if not p.name.startswith("torchinductor_")]  # torch's cache
    assert not left, f"left in the temporary directory: {left}"
    assert proc.stdout.count("Worst case") == 1  # rank 0 alone prints the table
    ref = api.evaluate("shardmod:make", dataset="synthetic", attack="pgd", attack_options={"steps": 5}, n_eval=30,
                       batch_size=8, device="cpu", out=tmp_path / "one")
    two = runs.read_json(tmp_path / "two" / "attacks" / "adhoc-pgd.json")
    assert two["world_size"] == 2 and _stable(two) == _stable(ref)
