"""The second-order and input-gradient regularizer defenses as a whole: registry names and aliases, typed
options, counted passes equal to the declared ``inherent_passes``, and two-epoch training runs on the
synthetic dataset (no NaN, the regularizer logged, passes recorded). The math lives in ``test_reg_*.py``."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from advbench.core.passes import PassCounter
from advbench.defenses import DEFENSES, StepContext, build_defense
from advbench.errors import UserError
from advbench.threat import ThreatModel

NAMES = ["soar", "foar", "scorpio", "grad-reg-fd", "grad-reg", "cure", "llr", "free-at"]
LINF = ThreatModel.parse("8/255", "linf")
L2 = ThreatModel.parse("0.5", "l2")
CTX = StepContext(epoch=0, step=0, steps_per_epoch=1, epochs=1, num_classes=5)

#: option sets whose pass counts differ (each must be counted exactly as declared)
VARIANTS = [
    ("soar", {}), ("soar", {"reg_grad_clip": None}), ("soar", {"n_z": 2}), ("soar", {"init": "zero"}),
    ("soar", {"init": "rand"}), ("soar", {"clip_mode": "reg-value"}),
    ("foar", {}), ("foar", {"init": "zero"}),
    ("scorpio", {}), ("scorpio", {"fw_steps": 1}), ("scorpio", {"scheme": "cd"}),
    ("scorpio", {"scheme": "cd", "fw_steps": 1}),
    ("grad-reg-fd", {}), ("grad-reg-fd", {"fd_order": "central"}),
    ("grad-reg", {}), ("cure", {}), ("cure", {"bn_mode_reg": "eval"}),
    ("llr", {"steps": 2}), ("free-at", {"replay_m": 3}),
]


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Softplus(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 5))


def test_registered_names_and_aliases():
    for name in NAMES:
        assert name in DEFENSES.names()
        assert DEFENSES.help(name)
    assert DEFENSES.canonical("gradreg-fd") == "grad-reg-fd"
    assert DEFENSES.canonical("gradreg-dbp") == "grad-reg"
    assert DEFENSES.get("gradreg_fd") is DEFENSES.get("grad-reg-fd")


@pytest.mark.parametrize("name", NAMES)
def test_options_are_typed_and_described(name):
    """Every option has a default; describe() is JSON; bad values are one-line UserErrors."""
    defense = build_defense(name, LINF)
    record = defense.describe()
    json.dumps(record)
    assert record["defense"] == name and record["options"]
    bad = {"soar": {"h": "0"}, "foar": {"lam": "-1"}, "scorpio": {"fw_steps": "0"}, "grad-reg-fd": {"h": "-0.1"},
           "grad-reg": {"lam": "-1"}, "cure": {"norm_power": "3"}, "llr": {"steps": "0"}, "free-at": {"replay_m": "0"}}
    with pytest.raises(UserError):
        build_defense(name, LINF, bad[name])
    with pytest.raises(UserError):
        build_defense(name, LINF, {"no_such_option": 1})


def test_option_strings_are_converted():
    soar = build_defense("soar", LINF, {"reg_eps": "4/255", "reg_grad_clip": "none", "init": "PGD1-full"})
    assert soar.options.reg_eps == pytest.approx(4 / 255)
    assert soar.options.reg_grad_clip is None and soar.options.init == "pgd1-full"
    cure = build_defense("cure", LINF, {"h_schedule": "0.1,0.4,0.8,1.8,3", "norm_power": "1", "reduction": "code"})
    assert cure.options.h_schedule == [0.1, 0.4, 0.8, 1.8, 3.0]
    fd = build_defense("grad-reg-fd", L2, {"penalty": "auto"})
    assert fd.describe()["resolved"]["penalty"] == "l2"
    assert build_defense("grad-reg-fd", LINF).penalty() == "l1"


@pytest.mark.parametrize("threat", [LINF, L2], ids=["linf", "l2"])
@pytest.mark.parametrize("name,options", VARIANTS, ids=[f"{n}-{'-'.join(map(str, o.values())) or 'default'}"
                                                        for n, o in VARIANTS])
def test_counted_passes_equal_inherent_passes(name, options, threat):
    """No duplicate forward and no unused retained graph: the hook counts exactly the declared passes, and
    the step leaves the model in train mode with finite parameters."""
    model = small_net().train()
    defense = build_defense(name, threat, options)
    x = torch.rand(8, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 5, (8,), generator=torch.Generator().manual_seed(2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with PassCounter(model) as counter:
        logs = defense.train_step(model, opt, x, y, CTX)
    assert (counter.forward / 8, counter.backward / 8) == tuple(defense.inherent_passes)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(math.isfinite(v) for v in logs.values())
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_inherent_passes_follow_the_options():
    assert build_defense("soar", LINF).inherent_passes == (3.0, 5.0)
    assert build_defense("soar", LINF, {"n_z": 3}).inherent_passes == (5.0, 9.0)
    assert build_defense("foar", LINF).inherent_passes == (2.0, 3.0)
    assert build_defense("scorpio", LINF, {"fw_steps": 3}).inherent_passes == (5.0, 5.0)
    assert build_defense("scorpio", LINF, {"scheme": "cd", "fw_steps": 3}).inherent_passes == (8.0, 8.0)
    assert build_defense("llr", LINF, {"steps": 10}).inherent_passes == (12.0, 13.0)
    assert build_defense("free-at", LINF, {"replay_m": 8}).inherent_passes == (8.0, 8.0)


# ------------------------------------------------------------------------------------------ end to end

#: a few-second run: 2 epochs of 2 steps, a 4-channel small-cnn, a tiny synthetic set and validation
TINY_RUN = dict(dataset="synthetic", model="small-cnn", epochs=2, n_train=64, batch_size=32, lr=0.01, device="cpu",
                quiet=True)
TINY = {"val_n": 16, "val_attack_steps": 1, "data.n_train": 200, "data.n_test": 50, "model.width": 4,
        "model.hidden": 16}


def read_metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("name,options", [
    ("soar", {}), ("foar", {}), ("scorpio", {"fw_steps": 1}), ("grad-reg-fd", {}), ("grad-reg", {}), ("cure", {}),
    ("llr", {"steps": 2}), ("free-at", {"replay_m": 2}),
])
def test_two_epochs_on_synthetic(tmp_path, name, options):
    from advbench import api

    run_dir, summary = api.train(out=tmp_path, name=name, defense=name, settings={**TINY, **options}, **TINY_RUN)
    assert summary["status"] == "completed"
    metrics = read_metrics(run_dir)
    assert len(metrics) == 2
    defense = build_defense(name, LINF, options)
    for m in metrics:
        assert math.isfinite(m["loss"])
        assert (m["forward_passes"], m["backward_passes"]) == pytest.approx(defense.inherent_passes)
        if name == "free-at":  # Free-AT has no regularizer; it logs its adversarial accuracy
            assert 0 <= m["adv_acc"] <= 1
        else:
            assert math.isfinite(m["reg"])
            assert m["reg"] >= 0 or name == "scorpio"  # SCORPIO's ℓ_Q = ℓ(x + v_Q) − ℓ(x) may be negative
    config = json.loads((run_dir / "config.json").read_text())
    assert config["defense"]["defense"] == name


def test_soar_recipe_no_bn_resnet10_fine_tuned_from_a_standard_run(tmp_path):
    """The paper's recipe: a BN-free ResNet-10 pre-trained with standard training, then SOAR."""
    from advbench import api

    common = {"dataset": "synthetic", "model": "resnet10", "epochs": 1, "n_train": 8, "batch_size": 8,
              "device": "cpu", "quiet": True}
    settings = {"val_n": 4, "val_attack_steps": 1, "data.n_train": 200, "data.n_test": 50, "model.bn": "false"}
    std_dir, _ = api.train(out=tmp_path, name="std", defense="standard", settings=settings, **common)
    soar_dir, summary = api.train(out=tmp_path, name="soar", defense="soar", init_from=str(std_dir), lr=0.004,
                                  settings=settings, **common)
    assert summary["status"] == "completed"
    config = json.loads((soar_dir / "config.json").read_text())
    assert config["init_from"].startswith(str(std_dir))
    assert config["config"]["model_options"]["bn"] in (False, "false")
    (m,) = read_metrics(soar_dir)
    assert math.isfinite(m["reg"]) and (m["forward_passes"], m["backward_passes"]) == (3.0, 5.0)


def test_free_at_perturbation_survives_an_interrupted_run(tmp_path):
    """Interrupt mid-epoch and resume: the persistent δ comes back from the checkpoint, so the weights equal an
    uninterrupted run's (they would not if δ restarted from zero)."""
    from advbench import api
    from advbench.core.signals import Interrupted, StopFlag

    common = dict(TINY_RUN, n_train=96, lr=0.05, defense="free-at", settings={**TINY, "replay_m": 2})
    ref_dir, _ = api.train(out=tmp_path, name="ref", **common)
    flag = StopFlag()

    def stop_after_second_batch(epoch: int, batch: int) -> None:
        if (epoch, batch) == (0, 1):
            flag.request("test")

    with pytest.raises(Interrupted):
        api.train(out=tmp_path, name="cut", stop=flag, batch_hook=stop_after_second_batch, **common)
    last = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=False)
    delta = last["defense_state"]["delta"]
    assert delta is not None and float(delta.abs().max()) > 0
    api.train(resume=tmp_path / "cut")
    ref = torch.load(ref_dir / "checkpoints" / "last.pt", weights_only=False)["model"]
    got = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(ref[k], got[k]) for k in ref)
