"""Distributed training against one process: 2 CPU ranks (gloo) launched by torchrun.

One torchrun launch (this file run as a script on every rank) trains all distributed jobs; the
tests compare its run directories with the same jobs trained here in one process:
- oracle: deterministic steps (standard training; PGD-AT and AWP with a zero start) on 2 ranks equal
  the 1-process steps on the same global batches (gradient averaging is exact up to float rounding);
- pgd-at, trades, soar, awp fine-tuned from one standard model: same checkpoint format and keys,
  validation accuracy within noise of 1 process, identical weights on both ranks;
- a stop requested on rank 1 alone stops both ranks; the resumed run equals the uninterrupted one;
- rank 1 never writes to a run directory.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from advbench import api, runs
from advbench.core.signals import Interrupted, StopFlag

COMMON: dict[str, Any] = {"dataset": "synthetic", "model": "small-cnn", "device": "cpu", "eps": "8/255"}
DATA = {"data.n_train": 1300, "data.n_test": 100, "model.width": 8}
INIT = {"defense": "standard", "epochs": 3, "batch_size": 25, "n_train": 1000, "lr": 0.003}
INIT_SET = {**DATA, "optimizer": "adam", "weight_decay": 0.0, "schedule": "constant", "val_n": 300,
            "val_size": 300, "val_attack_steps": 0}
TUNE = {"epochs": 1, "batch_size": 25, "n_train": 400, "lr": 0.001}
TUNE_SET = {**DATA, "optimizer": "adam", "weight_decay": 0.0, "schedule": "constant", "val_n": 300,
            "val_size": 300, "val_attack_steps": 3}
DEFENSES: dict[str, dict[str, Any]] = {
    "pgd-at": {"steps": 2},
    # detach_target: the reference's undetached KL target gives NaN gradients once softmax(f(x)) underflows
    # to 0 (logit spreads > ~100, which this quickly trained init has on a few images), in 1 process alike;
    # beta 1: at beta 6 this overconfident init first collapses (clean accuracy 78% -> 15-25% in 16 steps)
    "trades": {"steps": 2, "beta": 1.0, "detach_target": True},
    "soar": {},
    "awp": {"steps": 2},
}
# deterministic steps: SGD, no random attack starts; 3 global batches of 25 (13 + 12 per rank)
ORACLE = {"epochs": 1, "batch_size": 25, "n_train": 75, "lr": 0.05}
ORACLE_SET = {**DATA, "momentum": 0.9, "val_n": 0, "val_size": 300, "schedule": "constant"}
ORACLES: dict[str, dict[str, Any]] = {
    "standard": {},
    "pgd-at": {"steps": 2, "init": "zero"},
    "awp": {"steps": 1, "init": "zero"},
}
STOP_AT = (0, 5)  # (epoch, batch) after which rank 1 asks to stop
# every other defense: two global batches of 10 on 2 ranks (smoke: runs, ranks agree, per-sample state shared)
SMOKE = {"epochs": 1, "batch_size": 10, "n_train": 20, "lr": 0.01}
SMOKE_SET = {**DATA, "val_n": 0, "val_size": 300}
SMOKE_DEFENSES = ["trades-awp", "free-at", "grad-reg-fd", "grad-reg", "cure", "llr", "mart", "mma", "rat", "p-sat",
                  "h-sat", "dat", "cat", "scorpio", "foar"]


def jobs(init_dir: Path) -> list[dict[str, Any]]:
    """Every training job, identical for 1 and 2 processes (the resume job is handled apart)."""
    out = []
    for name, extra in ORACLES.items():
        out.append({"name": f"oracle-{name}", "kwargs": {**COMMON, **ORACLE, "defense": name},
                    "settings": {**ORACLE_SET, **extra}})
    for name, extra in DEFENSES.items():
        out.append({"name": name, "kwargs": {**COMMON, **TUNE, "defense": name, "init_from": str(init_dir)},
                    "settings": {**TUNE_SET, **extra}})
    return out


def smoke_jobs() -> list[dict[str, Any]]:
    """One tiny 2-rank run of every other defense."""
    return [{"name": f"smoke-{name}", "kwargs": {**COMMON, **SMOKE, "defense": name}, "settings": dict(SMOKE_SET)}
            for name in SMOKE_DEFENSES]


# ------------------------------------------------------------------ the torchrun worker (every rank)
def _worker(spec_file: str) -> None:
    import torch.distributed as dist

    from advbench.core.optim import max_param_difference
    from advbench.engine import train as train_mod

    torch.set_num_threads(1)
    spec = json.loads(Path(spec_file).read_text())
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    writes: list[str] = []
    if rank != 0:  # record (and still perform) every write rank 1 would make through the run-directory API
        for fn in ("write_json", "append_jsonl", "save_checkpoint", "atomic_path"):
            original = getattr(runs, fn)

            def spy(path, *a, _orig=original, _fn=fn, **k):
                writes.append(f"{_fn} {path}")
                return _orig(path, *a, **k)

            setattr(runs, fn, spy)
        lock_acquire = runs.RunLock.acquire

        def spy_lock(self, _orig=lock_acquire):
            writes.append(f"lock {self.path}")
            return _orig(self)

        runs.RunLock.acquire = spy_lock
    trainers: list[Any] = []
    original_run = train_mod.Trainer.run

    def run(self):
        trainers.append(self)
        return original_run(self)

    train_mod.Trainer.run = run
    result: dict[str, Any] = {"max_param_diff": {}, "store_equal": {}}
    for job in spec["jobs"] + spec["smoke"]:
        api.train(out=spec["out"], name=job["name"], settings=job["settings"], **job["kwargs"])
        result["max_param_diff"][job["name"]] = max_param_difference(trainers[-1].model)
        store = getattr(trainers[-1].defense, "store", None)
        if store is not None:  # per-sample state (MMA, CAT) must be the same on every rank after the epoch
            gathered = [None, None]
            dist.all_gather_object(gathered, store.values)
            result["store_equal"][job["name"]] = bool(torch.equal(gathered[0], gathered[1])) and \
                gathered[0].numel() >= job["kwargs"]["n_train"]
    # interrupt: rank 1 alone asks to stop; both ranks must stop at the same batch and save a consistent state
    job = spec["resume"]
    flag = StopFlag()

    def hook(epoch: int, batch: int) -> None:
        if rank == 1 and (epoch, batch) == tuple(STOP_AT):
            flag.request("test")

    try:
        api.train(out=spec["out"], name=job["name"], settings=job["settings"], stop=flag, batch_hook=hook,
                  **job["kwargs"])
        result["interrupted"] = False
    except Interrupted:
        result["interrupted"] = True
    _, summary = api.train(resume=Path(spec["out"]) / job["name"])
    result["resumed_status"] = summary["status"]
    result["max_param_diff"][job["name"]] = max_param_difference(trainers[-1].model)
    # a 1-process run resumed by 2 ranks; a 2-rank run cut here, to be resumed by 1 process (world sizes change)
    _, summary = api.train(resume=spec["cut_by_one"])
    result["resumed_from_one"] = summary
    job, flag = spec["cut_here"], StopFlag()
    try:
        api.train(out=spec["out"], name=job["name"], settings=job["settings"], stop=flag,
                  batch_hook=lambda e, b: flag.request("test") if rank == 0 and (e, b) == (0, 0) else None,
                  **job["kwargs"])
    except Interrupted:
        pass
    result["writes"] = writes
    Path(spec["results"], f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


# ------------------------------------------------------------------ fixtures
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs_1_and_2(tmp_path_factory):
    """(one-process runs dir, two-process runs dir, per-rank worker results)."""
    root = tmp_path_factory.mktemp("ddp")
    init_dir, _ = api.train(out=root, name="init", settings=INIT_SET, **COMMON, **INIT)
    all_jobs = jobs(init_dir)
    resume = {"name": "pgd-at-cut", "kwargs": all_jobs[len(ORACLES)]["kwargs"],
              "settings": all_jobs[len(ORACLES)]["settings"]}
    # world-size changes: free-at keeps per-rank state (its persistent perturbation)
    cut = {"name": "world-change", "kwargs": {**COMMON, **SMOKE, "defense": "free-at"}, "settings": dict(SMOKE_SET)}
    flag = StopFlag()
    with pytest.raises(Interrupted):
        api.train(out=root / "one", name=cut["name"], settings=cut["settings"], stop=flag,
                  batch_hook=lambda e, b: flag.request("test"), **cut["kwargs"])
    spec = {"jobs": all_jobs, "smoke": smoke_jobs(), "resume": resume, "out": str(root / "two"),
            "results": str(root), "cut_by_one": str(root / "one" / cut["name"]), "cut_here": cut}
    spec_file = root / "spec.json"
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--nnodes", "1",
           "--rdzv-backend", "c10d", f"--rdzv-endpoint=127.0.0.1:{_free_port()}", f"--log-dir={root / 'torchrun'}",
           __file__, str(spec_file)]
    proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # the 1-process runs train while the 2 ranks run (2 cores); they wait for the ranks at the end
    for job in all_jobs:
        api.train(out=root / "one", name=job["name"], settings=job["settings"], **job["kwargs"])
    output, _ = proc.communicate(timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"torchrun exited with {proc.returncode}:\n{output[-6000:]}")
    results = [json.loads((root / f"rank{r}.json").read_text()) for r in (0, 1)]
    return root / "one", root / "two", results


def _ckpt(run_dir: Path, which: str = "last") -> dict[str, Any]:
    return torch.load(run_dir / "checkpoints" / f"{which}.pt", weights_only=True)


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("name", list(ORACLES))
def test_two_rank_step_equals_one_process_step(runs_1_and_2, name):
    one, two, results = runs_1_and_2
    a, b = _ckpt(one / f"oracle-{name}")["model"], _ckpt(two / f"oracle-{name}")["model"]
    assert a.keys() == b.keys()
    diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    assert diff < 1e-5, f"{name}: 2-rank weights differ from 1-process weights by {diff:.2e}"
    ma, mb = runs.read_jsonl(one / f"oracle-{name}" / "metrics.jsonl"), runs.read_jsonl(two / f"oracle-{name}" /
                                                                                          "metrics.jsonl")
    assert ma[0]["loss"] == pytest.approx(mb[0]["loss"], rel=1e-5)
    assert results[0]["max_param_diff"][f"oracle-{name}"] == 0.0


@pytest.mark.parametrize("name", list(DEFENSES))
def test_two_ranks_match_one_process(runs_1_and_2, name):
    one, two, results = runs_1_and_2
    r1, r2 = one / name, two / name
    for which in ("last", "best"):
        c1, c2 = _ckpt(r1, which), _ckpt(r2, which)
        assert c1.keys() == c2.keys(), f"{which}.pt keys differ"
        assert {k: v.shape for k, v in c1["model"].items()} == {k: v.shape for k, v in c2["model"].items()}
    assert _ckpt(r2)["world_size"] == 2 and _ckpt(r1)["world_size"] == 1 and len(_ckpt(r2)["ranks"]) == 1
    m1, m2 = runs.read_jsonl(r1 / "metrics.jsonl")[-1], runs.read_jsonl(r2 / "metrics.jsonl")[-1]
    assert set(m2) - set(m1) == {"world_size"} and set(m1) <= set(m2)
    # accuracy within noise (300 validation images; the runs share init, data order and schedule)
    assert m2["val_clean_acc"] > 0.4, "the 2-rank run did not learn"
    assert abs(m1["val_clean_acc"] - m2["val_clean_acc"]) <= 0.08
    assert abs(m1["val_robust_acc"] - m2["val_robust_acc"]) <= 0.08
    assert m1["loss"] == pytest.approx(m2["loss"], rel=0.15)
    assert m1["forward_passes"] == pytest.approx(m2["forward_passes"])
    assert results[0]["max_param_diff"][name] == 0.0 and results[1]["max_param_diff"][name] == 0.0
    cfg1, cfg2 = runs.read_json(r1 / "config.json"), runs.read_json(r2 / "config.json")
    assert (cfg1["world_size"], cfg1["backend"]) == (1, None) and (cfg2["world_size"], cfg2["backend"]) == (2, "gloo")
    assert cfg1["config"] == cfg2["config"]
    s2 = runs.read_json(r2 / "summary.json")
    assert s2["status"] == "completed" and s2["world_size"] == 2 and s2["peak_mem_bytes"] > 0


def test_stop_on_one_rank_stops_all_and_resume_is_exact(runs_1_and_2):
    _, two, results = runs_1_and_2
    assert all(r["interrupted"] for r in results), "both ranks must stop when rank 1 asks"
    assert all(r["resumed_status"] == "completed" for r in results)
    cut, ref = _ckpt(two / "pgd-at-cut"), _ckpt(two / "pgd-at")
    assert all(torch.equal(cut["model"][k], ref["model"][k]) for k in ref["model"]), \
        "a resumed 2-rank run differs from the uninterrupted one"
    a, b = runs.read_jsonl(two / "pgd-at-cut" / "metrics.jsonl"), runs.read_jsonl(two / "pgd-at" / "metrics.jsonl")
    assert [m["epoch"] for m in a] == [0]
    for key in ("loss", "adv_acc", "val_clean_acc", "val_robust_acc"):
        assert a[0][key] == pytest.approx(b[0][key], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", SMOKE_DEFENSES)
def test_every_defense_trains_under_ddp(runs_1_and_2, name):
    _, two, results = runs_1_and_2
    run_dir = two / f"smoke-{name}"
    assert runs.read_json(run_dir / "summary.json")["status"] == "completed"
    m = runs.read_jsonl(run_dir / "metrics.jsonl")[-1]
    assert m["world_size"] == 2 and torch.isfinite(torch.tensor(m["loss"]))
    assert results[0]["max_param_diff"][f"smoke-{name}"] == 0.0, "ranks ended with different weights"
    assert results[0]["store_equal"].get(f"smoke-{name}", True), "per-sample state differs between ranks"


def test_resume_with_another_number_of_processes(runs_1_and_2):
    one, two, results = runs_1_and_2
    summary = results[0]["resumed_from_one"]  # saved by 1 process, finished by 2
    assert summary["status"] == "completed" and summary["world_size"] == 2
    assert any("written by 1" in note for note in summary["notes"])
    cut = two / "world-change"  # saved by 2 ranks after batch 1 of 2, finished here by 1 process
    ckpt = _ckpt(cut)
    assert (ckpt["world_size"], ckpt["batch"], len(ckpt["ranks"])) == (2, 1, 1)
    _, summary = api.train(resume=cut)
    assert summary["status"] == "completed" and summary["world_size"] == 1
    assert any("written by 2" in note for note in summary["notes"])


def test_rank1_writes_nothing(runs_1_and_2):
    _, two, results = runs_1_and_2
    assert results[1]["writes"] == []
    assert not list(two.rglob("*.tmp")) and not list(two.rglob(".lock"))


def test_sharded_batches_are_the_single_process_batch():
    from advbench.data import load_splits
    from advbench.data.batching import batches

    split = load_splits("synthetic", n_train=50, options={"n_train": 100, "n_test": 10}).train
    kw = {"shuffle": True, "seed": 3, "epoch": 1, "augment": "crop-flip"}
    whole = list(batches(split, 16, **kw))
    parts = [list(batches(split, 16, shard=(r, 3), **kw)) for r in range(3)]
    for b, (x, y, idx) in enumerate(whole):  # 16, 16, 16, 2 rows: 6/5/5 and 1/1/0 per rank
        assert torch.equal(torch.cat([p[b][0] for p in parts]), x)
        assert torch.equal(torch.cat([p[b][1] for p in parts]), y)
        assert torch.equal(torch.cat([p[b][2] for p in parts]), idx)


def test_torchrun_echo_of_a_ctrl_c_does_not_abort(monkeypatch):
    import signal
    import time

    from advbench.core.signals import stop_on_signals

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")  # set by torchrun in its workers
    flag = StopFlag()
    with stop_on_signals(flag):
        os.kill(os.getpid(), signal.SIGINT)  # from the terminal
        os.kill(os.getpid(), signal.SIGINT)  # the torchrun agent forwards the same Ctrl-C
        time.sleep(0.01)
    assert flag.requested
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    flag = StopFlag()
    with pytest.raises(KeyboardInterrupt), stop_on_signals(flag):  # outside torchrun a second Ctrl-C aborts
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)


def test_cli_nproc_relaunches_under_torchrun(tmp_path):
    cmd = [sys.executable, "-m", "advbench", "train", "--nproc", "2", "--epochs", "1", "--batch-size", "10",
           "--n-train", "20", "--device", "cpu", "--out", str(tmp_path), "--name", "cli", "-q", "--set", "val_n=0",
           "--set", "data.n_train=300", "--set", "data.n_test=50", "--set", "model.width=8"]
    system_tmp = tmp_path / "system-tmp"  # the temporary directory of the command and everything it starts
    system_tmp.mkdir()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(system_tmp)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("trained standard for 1 epochs") == 1, "rank 0 alone reports"
    left = [p.name for p in system_tmp.iterdir() if not p.name.startswith("torchinductor_")]  # torch's cache
    assert not left, f"left in the temporary directory: {left}"
    cfg = runs.read_json(tmp_path / "cli" / "config.json")
    assert (cfg["world_size"], cfg["backend"]) == (2, "gloo") and "--nproc" not in cfg["command"]
    assert runs.read_json(tmp_path / "cli" / "summary.json")["status"] == "completed"


if __name__ == "__main__":  # torchrun runs this file on every rank
    _worker(sys.argv[1])
