"""Host syncs out of the hot loops give the same results: evaluation PGD's early exit checked every k steps,
training logs read once per interval, AWP's w + v built once per step and its reused BN-buffer stash, and
the ``--threads`` option of ``train`` and ``attack``."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.func import functional_call

from advbench import api
from advbench.attacks.pgd import ascent_step, check_interval, pgd_perturb, random_init
from advbench.cli import main
from advbench.defenses.weight_perturbation import BufferStash, perturbed_forward, preserved_buffers
from advbench.engine import state
from advbench.models import build_model
from advbench.threat import ThreatModel


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("small-cnn", num_classes=10, in_channels=3, input_size=16).eval()


def _batch(model: nn.Module, n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    x = torch.rand(n, 3, 16, 16, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)  # every point starts correct: fooled at different steps, some never
    return x, y


def _first_misclassified_oracle(model, x, y, threat, steps, alpha, seed):
    """Plain full-batch PGD (no early exit, nobody leaves the batch); each sample's first misclassified
    iterate, else its last iterate."""
    g = torch.Generator().manual_seed(seed)
    delta = random_init(x, threat, "uniform", g)
    out, found = x.clone(), torch.zeros(len(x), dtype=torch.bool)
    for _ in range(steps):
        delta.requires_grad_(True)
        logits = model(x + delta)
        (grad,) = torch.autograd.grad(nn.functional.cross_entropy(logits, y, reduction="sum"), delta)
        delta = delta.detach()
        new = (logits.argmax(1) != y) & ~found
        out[new] = (x + delta)[new]
        found |= new
        delta = ascent_step(delta, grad, threat, alpha)
        delta = (x + delta).clamp(0, 1) - x
    out[~found] = (x + delta)[~found]
    return out, found


@pytest.mark.parametrize("eps", ["4/255", "8/255"])
def test_pgd_early_exit_every_k_steps_is_bit_identical(eps):
    model = _net()
    x, y = _batch(model)
    threat = ThreatModel.parse(eps, "linf")
    steps, alpha = 10, threat.eps / 4
    oracle, found = _first_misclassified_oracle(model, x, y, threat, steps, alpha, seed=1)
    assert 0 < int(found.sum()) < len(x) or eps == "8/255"  # a mix of fooled and robust points at 4/255
    for restarts in (1, 3):
        results = {}
        for k in (1, 2, 3, 7, steps, 50):
            g = torch.Generator().manual_seed(1)
            results[k] = pgd_perturb(model, x, y, threat, steps=steps, alpha=alpha, restarts=restarts, generator=g,
                                     check_every=k)
        for k, r in results.items():
            assert torch.equal(r, results[1]), f"check_every={k}, restarts={restarts}"
        if restarts == 1:
            assert torch.equal(results[1], oracle)


def test_pgd_check_interval_by_device():
    assert check_interval(torch.device("cpu")) == 1  # the sync is free on a CPU: drop fooled samples at once
    assert check_interval(torch.device("cuda")) > 1


def test_flush_logs_equals_per_step_float_accumulation():
    g = torch.Generator().manual_seed(0)
    steps = []
    for i in range(37):
        logs = {"loss": torch.rand((), generator=g) * 3, "acc": (torch.rand(8, generator=g) > 0.5).float().mean(),
                "half": torch.rand((), generator=g).to(torch.bfloat16), "passes": 11.0 + i, "flag": i % 2}
        steps.append((logs, 8 + i % 3))
    old: dict[str, float] = {}
    for logs, n in steps:  # the previous trainer: float() of every value after every step
        state.accumulate(old, {k: float(v) for k, v in logs.items()}, n)
    for every in (1, 5, 16, 100):
        new: dict[str, float] = {}
        pending: list = []
        for logs, n in steps:
            pending.append((logs, n))
            if len(pending) >= every:
                state.flush_logs(new, pending)
        state.flush_logs(new, pending)
        assert new == old and not pending  # exactly equal, not approximately


def _train(tmp_path, name, monkeypatch, every, defense="trades", extra=()):
    monkeypatch.setattr(state, "LOG_EVERY", every)
    run_dir, _ = api.train(out=tmp_path, name=name, dataset="synthetic", model="small-cnn", defense=defense,
                           epochs=2, batch_size=32, n_train=160, device="cpu", quiet=True, fresh=True,
                           settings=["steps=2", "val_n=32", "val_attack_steps=2", "data.n_train=256",
                                     "data.n_test=64", *extra])
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        for k in ("train_seconds", "val_seconds", "peak_mem_bytes", "peak_mem_extra_bytes"):
            line.pop(k, None)
    return lines, run_dir


@pytest.mark.parametrize("defense,extra", [("trades", ()), ("trades-awp", ("warmup_epochs=1",))])
def test_training_logs_read_per_interval_equal_per_step(tmp_path, monkeypatch, defense, extra):
    per_step, _ = _train(tmp_path, "a", monkeypatch, 1, defense, extra)
    interval, run_dir = _train(tmp_path, "b", monkeypatch, 3, defense, extra)
    assert per_step == interval  # losses, accuracies, KL, weight-norm ratio and validation: identical
    assert {"loss", "acc", "adv_acc", "ce", "kl"} <= set(per_step[0])
    if defense == "trades-awp":
        assert "awp_rel_norm" in per_step[1] and "awp_rel_norm" not in per_step[0]  # on after the warm-up epoch
        assert per_step[1]["awp_rel_norm"] == pytest.approx(0.005, rel=1e-5)  # γ: ‖v‖ = γ‖w‖ per layer


def test_perturbed_forward_builds_w_plus_v_once_with_the_same_gradient():
    model = _net()
    x, y = _batch(model, 8)
    named = [(n, p) for n, p in model.named_parameters() if p.dim() >= 2]
    v = {n: 0.01 * torch.randn_like(p) for n, p in named}

    def old_forward(inp):  # the previous code: w + v rebuilt inside every call
        params = dict(model.named_parameters())
        return functional_call(model, {k: params[k] + dv for k, dv in v.items()}, (inp,))

    grads = []
    for fwd in (old_forward, perturbed_forward(model, v)):
        model.zero_grad()
        loss = nn.functional.cross_entropy(fwd(x), y) + nn.functional.cross_entropy(fwd(x.flip(0)), y)
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


def test_buffer_stash_restores_like_preserved_buffers_and_reuses_its_tensors():
    torch.manual_seed(0)
    model = build_model("preact-resnet18", num_classes=10, input_size=16).train()
    x = torch.rand(4, 3, 16, 16)
    before = [b.clone() for b in model.buffers()]
    stash = BufferStash()
    ptrs = None
    for _ in range(2):
        with stash.preserved(model):
            model(x)  # train-mode forward: BN statistics and counters move
            assert not all(torch.equal(a, b) for a, b in zip(before, model.buffers(), strict=True))
        assert all(torch.equal(a, b) for a, b in zip(before, model.buffers(), strict=True))
        now = [s.data_ptr() for s in stash._saved]
        assert ptrs is None or now == ptrs  # allocated once, reused
        ptrs = now
    with preserved_buffers(model):
        model(x)
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers(), strict=True))


def test_threads_option_of_train_and_attack(tmp_path, capsys):
    common = ["--dataset", "synthetic", "--n-train", "64", "--batch-size", "32", "--epochs", "1", "--device", "cpu",
              "--out", str(tmp_path), "--quiet", "--set", "val_n=16", "--set", "data.n_train=128",
              "--set", "data.n_test=32"]
    assert main(["train", "--threads", "2", "--name", "t", *common]) == 0
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    assert config["runtime"]["cpu_threads"] == 2
    torch.set_num_threads(1)
    assert main(["attack", str(tmp_path / "t"), "--attack", "pgd", "--set", "steps=2", "--n-eval", "16",
                 "--threads", "2", "--quiet"]) == 0
    result = json.loads((tmp_path / "t" / "attacks" / "adhoc-pgd.json").read_text())
    assert result["cpu_threads"] == 2
    capsys.readouterr()
    for cmd in (["train", "--threads", "0", *common], ["attack", str(tmp_path / "t"), "--threads", "-1"]):
        assert main(cmd) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--threads must be >= 1" in err[0]
