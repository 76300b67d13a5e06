"""eps parsing, the registry's suggestions and typed --set overrides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest
import torch

from advbench.config import TrainConfig, apply_overrides, lr_factor, parse_set_options
from advbench.errors import UserError
from advbench.registry import Registry
from advbench.threat import ThreatModel, parse_eps, parse_eps_list, parse_norm


@pytest.mark.parametrize("text,value,literal", [
    ("8/255", 8 / 255, "8/255"), ("2/255", 2 / 255, "2/255"), ("0.031", 0.031, "0.031"),
    ("0.5", 0.5, "0.5"), ("1.74", 1.74, "1.74"), ("16/255", 16 / 255, "16/255"), ("0", 0.0, "0"),
    ("1e-3", 1e-3, "1e-3"), (0.25, 0.25, "0.25"),
])
def test_parse_eps_good(text, value, literal):
    v, t = parse_eps(text)
    assert v == pytest.approx(value, abs=0, rel=1e-15)
    assert t == literal


def test_eps_text_keeps_8_255_distinct_from_0_031():
    a, b = ThreatModel.parse("8/255"), ThreatModel.parse("0.031")
    assert a.eps_text != b.eps_text and a.eps != b.eps


@pytest.mark.parametrize("bad", ["", "abc", "8/0", "-0.1", "8/255/2", "inf", "nan", "1/-3", "eight",
                                 " 16 / 255 ", " 8/255", "8 /255", "1e-400", "0.0/1e-500"])
def test_parse_eps_bad(bad):
    with pytest.raises(UserError) as err:
        parse_eps(bad)
    assert "\n" not in str(err.value) and "eps" in str(err.value)


@pytest.mark.parametrize("eps", ["2", "255/8", "1.0001"])
def test_linf_eps_above_one_is_refused_but_l2_is_not(eps):
    with pytest.raises(UserError, match="above 1"):
        ThreatModel.parse(eps, "linf")
    assert ThreatModel.parse(eps, "l2").eps > 1


@pytest.mark.parametrize("name", ["SMALL-CNN", "", " small-cnn", "Small-Cnn"])
def test_registry_names_are_lower_case_as_listed(name):
    reg = Registry("model")
    reg.add("small-cnn", object())
    with pytest.raises(UserError, match="unknown model"):
        reg.get(name)
    assert reg.canonical("small_cnn") == "small-cnn"  # underscores stay a documented spelling


def test_eps_list_and_norm():
    assert [t for _, t in parse_eps_list("4/255,6/255, 8/255")] == ["4/255", "6/255", "8/255"]
    assert parse_norm("Linf") == "linf" and parse_norm("L2") == "l2" and parse_norm("inf") == "linf"
    with pytest.raises(UserError):
        parse_norm("l1")


def test_registry_suggests_closest():
    reg: Registry[int] = Registry("defense")
    reg.add("p-sat", 1)
    reg.add("h-sat", 2)
    reg.add("pgd-at", 3)
    assert reg.get("p_sat") == 1
    with pytest.raises(UserError, match="did you mean 'p-sat'"):
        reg.get("P_SAT")  # names are lower case as listed (issue: SMALL-CNN kept its spelling in run names)
    with pytest.raises(UserError) as err:
        reg.get("psat")
    assert str(err.value).startswith("unknown defense 'psat'; did you mean 'p-sat'")
    with pytest.raises(ValueError):
        reg.add("p-sat", 4)


@dataclass
class _Opts:
    beta: float = 6.0
    steps: int = 10
    mode: Literal["train", "eval"] = "eval"
    flag: bool = False
    step: float | None = None


def test_typed_overrides():
    o = apply_overrides(_Opts(), {"beta": "9", "steps": "20", "mode": "train", "flag": "true", "step": "2/255"}, "x")
    assert o == _Opts(beta=9.0, steps=20, mode="train", flag=True, step=2 / 255)
    assert apply_overrides(_Opts(), {"step": "none"}, "x").step is None
    for bad in ({"steps": "2.5"}, {"beta": "abc"}, {"mode": "test"}, {"flag": "maybe"}, {"betta": "1"}):
        with pytest.raises(UserError) as err:
            apply_overrides(_Opts(), bad, "defense 'trades'")
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="did you mean 'beta'"):
        apply_overrides(_Opts(), {"betta": "1"}, "defense 'trades'")


def test_set_parsing():
    assert parse_set_options(["beta=6", "model.bn=false", "beta=9"]) == {"beta": "9", "model.bn": "false"}
    with pytest.raises(UserError):
        parse_set_options(["beta"])


def test_lr_schedules():
    cfg = TrainConfig(epochs=200, schedule="multistep", milestones=[100, 150])
    assert lr_factor(cfg, 99.9) == 1.0 and lr_factor(cfg, 100) == pytest.approx(0.1)
    assert lr_factor(cfg, 160) == pytest.approx(0.01)
    default = TrainConfig(epochs=10)
    assert lr_factor(default, 4.99) == 1.0 and lr_factor(default, 5.0) == pytest.approx(0.1)
    assert lr_factor(default, 7.5) == pytest.approx(0.01)
    cos = TrainConfig(epochs=10, schedule="cosine")
    assert lr_factor(cos, 0) == 1.0 and lr_factor(cos, 5) == pytest.approx(0.5) and lr_factor(cos, 10) == 0
    tri = TrainConfig(epochs=10, schedule="piecewise-linear")
    assert lr_factor(tri, 0) == 0 and lr_factor(tri, 4) == 1 and lr_factor(tri, 10) == 0
    assert lr_factor(tri, 7) == pytest.approx(0.5)


# --- the one option converter (advbench.core.options) ---------------------------------------------------------

@pytest.mark.parametrize("tp,text,expected", [
    (bool, "yes", True), (bool, "off", False), (bool, "1", True), (bool, 0, False),
    (int, "12", 12), (int, "3.0", 3), (int, "9223372036854775807", 2**63 - 1),
    (float, "2/255", 2 / 255), (float, "1e-3", 1e-3), (float, 3, 3.0),
])
def test_convert_accepts(tp, text, expected):
    from advbench.core.options import convert

    assert convert(text, tp, "x") == expected


@pytest.mark.parametrize("tp,text,needle", [
    (float, "nan", "finite"), (float, "inf", "finite"), (float, "-inf", "finite"), (float, "1e400", "finite"),
    (float, float("nan"), "finite"), (int, "99999999999999999999", "out of range"), (int, "1e30", "out of range"),
    (int, "nan", "expected an integer"), (int, "1.5", "expected an integer"), (bool, "maybe", "true or false"),
    (float, True, "expected a number"), (int, True, "expected an integer"),
])
def test_convert_refuses(tp, text, needle):
    from advbench.core.options import convert

    with pytest.raises(UserError, match=needle):
        convert(text, tp, "x")


def test_models_datasets_and_defenses_share_one_converter():
    """The same text gives the same value (or the same refusal) for a model, a dataset and a defense option."""
    from advbench.data import load_splits
    from advbench.defenses import build_defense
    from advbench.models import build_model
    from advbench.threat import ThreatModel

    net = build_model("resnet18", num_classes=10, options={"bn": "off"})
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    with pytest.raises(UserError, match="true or false"):
        build_model("resnet18", num_classes=10, options={"bn": "maybe"})
    assert load_splits("synthetic", options={"n_train": "300.0", "n_test": "20"}).test.y.shape[0] == 20
    with pytest.raises(UserError, match="finite"):
        build_defense("trades", ThreatModel(), {"beta": "inf"})
