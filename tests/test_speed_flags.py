"""Speed and memory flags of training: AMP (bf16 / fp16 + loss scaling), channels_last, torch.compile,
gradient checkpointing, runtime settings in config.json, peak memory in metrics.jsonl / summary.json."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from advbench import api, runs
from advbench.cli import main
from advbench.defenses import DEFENSES
from advbench.engine import setup
from advbench.errors import UserError
from advbench.models import build_model, enable_grad_checkpointing

TINY = dict(dataset="synthetic", model="small-cnn", epochs=1, batch_size=16, n_train=32, lr=0.05, device="cpu")
TINY_SET = {"val_n": 0, "data.n_train": 100, "data.n_test": 20, "model.width": 8}


def _metrics(run_dir):
    return runs.read_jsonl(run_dir / "metrics.jsonl")[-1]


def _weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def fp32_run(tmp_path_factory):
    run_dir, _ = api.train(out=tmp_path_factory.mktemp("fp32"), name="fp32", settings=TINY_SET, **TINY)
    return run_dir


def test_bf16_autocast_on_cpu_runs_and_is_recorded(tmp_path, fp32_run):
    run_dir, _ = api.train(out=tmp_path, name="bf16", settings=TINY_SET, amp="bf16", **TINY)
    cfg = runs.read_json(run_dir / "config.json")
    assert cfg["config"]["amp"] == "bf16"
    assert cfg["runtime"]["autocast_dtype"] == "bf16" and cfg["runtime"]["grad_scaler"] is False
    loss, ref = _metrics(run_dir)["loss"], _metrics(fp32_run)["loss"]
    assert math.isfinite(loss) and loss != ref, "bf16 autocast left the step bit-identical to fp32"
    assert loss == pytest.approx(ref, rel=0.05)
    assert all(v.dtype == torch.float32 for v in _weights(run_dir).values()), "weights stay float32 under AMP"


def _cpu_fp16_autocast() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            out = torch.nn.functional.conv2d(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 3, 3))
        return out.dtype == torch.float16
    except (RuntimeError, TypeError):
        return False


@pytest.mark.skipif(not _cpu_fp16_autocast(), reason="this PyTorch build has no float16 autocast on the CPU")
@pytest.mark.parametrize("defense", ["standard", "soar"])
def test_fp16_with_loss_scaling_runs(tmp_path, defense, monkeypatch):
    # soar: its regularizer gradient is unscaled before its clip and its CE gradient is added unscaled
    monkeypatch.setattr(setup, "CPU_FP16_FOR_TESTS", True)  # users get a refusal on a CPU (test below)
    run_dir, _ = api.train(out=tmp_path, name=defense, defense=defense, settings=TINY_SET, amp="fp16", **TINY)
    assert runs.read_json(run_dir / "config.json")["runtime"]["grad_scaler"] is True
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["scaler"] and ckpt["scaler"]["scale"] > 0
    assert math.isfinite(_metrics(run_dir)["loss"])
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_fp16_on_a_cpu_is_refused_in_one_line(tmp_path):
    with pytest.raises(UserError, match="--amp fp16 needs CUDA"):
        api.train(out=tmp_path, name="f", settings=TINY_SET, amp="fp16", **TINY)
    assert not (tmp_path / "f").exists()


def test_channels_last_gives_the_same_step(tmp_path, fp32_run):
    run_dir, _ = api.train(out=tmp_path, name="cl", settings=TINY_SET, channels_last=True, **TINY)
    assert runs.read_json(run_dir / "config.json")["runtime"]["channels_last"] is True
    assert _metrics(run_dir)["loss"] == pytest.approx(_metrics(fp32_run)["loss"], rel=1e-5)
    a, b = _weights(run_dir), _weights(fp32_run)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5


@pytest.mark.parametrize("name,options", [("wrn-28-4", {"depth": 10, "widen": 1}), ("resnet10", {}),
                                          ("preact-resnet20", {})])
def test_grad_checkpointing_gives_the_same_gradients(name, options):
    torch.manual_seed(0)
    plain = build_model(name, num_classes=10, in_channels=3, input_size=16, mean=[0.5] * 3, std=[0.25] * 3,
                        options=options).double().train()
    ckpt = copy.deepcopy(plain)
    enable_grad_checkpointing(ckpt, name)
    x = torch.rand(4, 3, 16, 16, dtype=torch.float64)
    y = torch.tensor([1, 2, 3, 4])
    for model in (plain, ckpt):  # double backprop through the checkpointed blocks, as grad-reg does
        xi = x.clone().requires_grad_(True)
        loss = F.cross_entropy(model(xi), y)
        (g,) = torch.autograd.grad(loss, xi, create_graph=True)
        (loss + g.pow(2).sum()).backward()
    for p, q in zip(plain.parameters(), ckpt.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, rtol=1e-12, atol=1e-14)
    for a, b in zip(plain.buffers(), ckpt.buffers(), strict=True):  # BN statistics updated once, not twice
        assert torch.equal(a, b)


def test_grad_checkpointing_is_a_user_error_for_plain_cnns(tmp_path):
    with pytest.raises(UserError, match="grad-checkpointing is not supported by model 'small-cnn'"):
        api.train(out=tmp_path, settings=TINY_SET, grad_checkpointing=True, **TINY)


def test_sync_bn_on_cpu_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="sync-bn needs CUDA"):
        api.train(out=tmp_path, settings=TINY_SET, sync_bn=True, **TINY)


def test_compile_runs_and_a_failing_first_step_is_one_line(tmp_path, fp32_run, monkeypatch):
    run_dir, _ = api.train(out=tmp_path, name="compiled", settings={**TINY_SET, "compile_backend": "eager"},
                           compile=True, **TINY)
    assert runs.read_json(run_dir / "config.json")["runtime"]["compile"] is True
    assert _weights(run_dir).keys() == _weights(fp32_run).keys(), "compiling must not rename checkpoint keys"
    assert _metrics(run_dir)["loss"] == pytest.approx(_metrics(fp32_run)["loss"], rel=1e-5)

    def failing_step(self, *args, **kwargs):
        raise RuntimeError("backend compiler failed\nmore lines")

    monkeypatch.setattr(DEFENSES.get("standard"), "train_step", failing_step)
    with pytest.raises(UserError, match=r"the first training step of 'standard' failed under torch.compile "
                                        r"\(RuntimeError: backend compiler failed\)"):
        api.train(out=tmp_path, name="failing", compile=True, settings={**TINY_SET, "compile_backend": "eager"},
                  **TINY)


@pytest.mark.parametrize("defense", [name for name in DEFENSES if DEFENSES.get(name).double_backward])
def test_compile_is_refused_up_front_for_double_backward(tmp_path, defense, capsys):
    with pytest.raises(UserError, match=rf"^--compile: '{defense}' differentiates through a gradient \(double "
                                        r"backward\), which torch.compile does not support; run without --compile$"):
        api.train(out=tmp_path, name="refused", defense=defense, compile=True, settings=TINY_SET, **TINY)
    assert not (tmp_path / "refused").exists(), "refused before a run folder is made"
    code = main(["train", "--defense", defense, "--compile", "--epochs", "1", "--device", "cpu", "--out",
                 str(tmp_path), "--name", "cli", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "differentiates through a gradient (double backward)" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "cli").exists()


def test_peak_memory_is_recorded(fp32_run, tmp_path):
    m = _metrics(fp32_run)
    assert m["peak_mem_kind"] == "cpu-peak-rss" and m["peak_mem_bytes"] > 0 and m["peak_mem_extra_bytes"] >= 0
    summary = runs.read_json(fp32_run / "summary.json")
    assert summary["peak_mem_bytes"] == m["peak_mem_bytes"] and summary["peak_mem_kind"] == "cpu-peak-rss"
    off, summary_off = api.train(out=tmp_path, name="off", settings={**TINY_SET, "mem_every": 0}, **TINY)
    assert "peak_mem_bytes" not in _metrics(off) and summary_off["peak_mem_bytes"] is None


def test_cli_speed_flags_are_recorded(tmp_path, capsys):
    code = main(["train", "--epochs", "1", "--batch-size", "16", "--n-train", "16", "--device", "cpu", "--out",
                 str(tmp_path), "--name", "cli", "-q", "--amp", "bf16", "--channels-last", "--set", "val_n=0",
                 "--set", "data.n_train=100", "--set", "data.n_test=20", "--set", "model.width=8",
                 "--set", "pin_memory=false"])
    assert code == 0, capsys.readouterr()
    cfg = runs.read_json(tmp_path / "cli" / "config.json")
    assert cfg["config"]["amp"] == "bf16" and cfg["config"]["channels_last"] is True
    assert cfg["world_size"] == 1 and cfg["backend"] is None
    rt = cfg["runtime"]
    assert rt["cudnn_benchmark"] is False and rt["data"]["pin_memory"] is False and rt["data"]["loader_workers"] == 0
    assert main(["train", "--amp", "fp8", "--out", str(tmp_path)]) == 2
