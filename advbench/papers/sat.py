"""SAT (Sitawarin et al., AISec '21): recipes of Tables 1-3 (Clean, AutoAttack, Sum)."""

from __future__ import annotations

from advbench.papers.recipes import ColumnRecipe, RowRecipe, TableRecipe, register

_ROWS = {
    "AT [23]": RowRecipe("pgd-at", {"steps": 10}),
    "TRADES [36]": RowRecipe("trades", {"beta": 6.0}),
    "DAT [30]": RowRecipe("dat"),
    "CAT20 [7]": RowRecipe("cat"),
    "H-SAT (ours)": RowRecipe("h-sat"),
    "P-SAT (ours)": RowRecipe("p-sat"),
}
_DISC = (
    "PreAct-ResNet-20 width (16/32/64) is taken from the common CIFAR ResNet-20, not printed in the paper.",
    "lambda schedules: per-epoch linear ramp 0 -> 1 over epochs 30-70 (per-iteration updates not stated).",
    "Early stopping on a held-out validation split (45k/5k), as in the paper.",
    "Sum = Clean + Adv is recomputed per seed from the measured columns; bold = recomputed column maxima.",
)


def _block(prefix: str) -> dict[str, ColumnRecipe]:
    return {
        f"{prefix} / Clean": ColumnRecipe("autoattack", "Clean"),
        f"{prefix} / Adv": ColumnRecipe("autoattack", "AutoAttack"),
        f"{prefix} / Sum": ColumnRecipe(None, "Sum", transform="sum",
                                        parts=(f"{prefix} / Clean", f"{prefix} / Adv")),
    }


_EPS045 = "eps 0.45 block: not planned (a recipe has one training threat model; the grid shows 0.3 runs)"
_OTHER = "other dataset/architecture block: run 'advbench reproduce sat --table 1 --dataset D --model M'"
register(TableRecipe(
    paper="sat", table="1", dataset="cifar10", model="preact-resnet20", norm="linf", eps="8/255",
    train={"epochs": 100, "batch_size": 128, "lr": 0.05, "schedule": "multistep", "milestones": [40, 60, 80],
           "momentum": 0.9, "weight_decay": 5e-4, "select": "val-robust"},
    rows=dict(_ROWS),
    columns={**_block("CIFAR-10 / PreAct-ResNet-20"),
             **{f"{d} / {a} / {m}": _OTHER for d, a in (("CIFAR-10", "WideResNet-34-10"),
                                                          ("CIFAR-100", "PreAct-ResNet-20"),
                                                          ("CIFAR-100", "WideResNet-34-10"))
                for m in ("Clean", "Adv", "Sum")}},
    suites=(("autoattack", None),), seeds=(0,), n_eval=10000,
    threat_text="Linf 8/255", attack_versions="AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square), seed 0",
    compute="6 defenses x PRN-20 x 100 epochs: ~6 h each on a 1080 Ti (paper, P-SAT); WRN-34-10 ~24 h each",
    discrepancies=_DISC,
))
register(TableRecipe(
    paper="sat", table="2", dataset="mnist", model="sat-cnn", norm="linf", eps="0.3",
    train={"epochs": 70, "batch_size": 128, "lr": 0.01, "schedule": "multistep", "milestones": [40, 50, 60],
           "momentum": 0.9, "select": "val-robust"},
    rows=dict(_ROWS),
    columns={**{f"0.3 / {m}": c for m, c in (("Clean", ColumnRecipe("autoattack", "Clean")),
                                              ("Adv", ColumnRecipe("autoattack", "AutoAttack")),
                                              ("Sum", ColumnRecipe(None, "Sum", transform="sum",
                                                                   parts=("0.3 / Clean", "0.3 / Adv"))))},
             **{f"0.45 / {m}": _EPS045 for m in ("Clean", "Adv", "Sum")}},
    suites=(("autoattack", None),), seeds=(0,), n_eval=10000,
    threat_text="Linf 0.3", attack_versions="AutoAttack standard, seed 0",
    compute="6 defenses x 70 epochs of the 3-conv CNN: ~2 h each on a 1080 Ti",
    discrepancies=("CNN strides not printed (CleverHans-style 2, 2, 1 assumed).", *_DISC[1:]),
))
_BLOCK = "{} block: run 'advbench reproduce sat --table 3{}' (its runs then fill the CIFAR-10 / 16/255 columns)"
_EPS24 = "24/255 block: not planned (a recipe has one training threat model; the grid shows 16/255 runs)"
register(TableRecipe(
    paper="sat", table="3", dataset="cifar10", model="preact-resnet20", norm="linf", eps="16/255",
    train={"epochs": 100, "batch_size": 128, "lr": 0.05, "schedule": "multistep", "milestones": [40, 60, 80],
           "momentum": 0.9, "weight_decay": 5e-4, "select": "val-robust"},
    rows={k: (RowRecipe("dat", {"fosc_epochs": 50.0}) if k == "DAT [30]" else v)
          for k, v in _ROWS.items() if k != "CAT20 [7]"},
    columns={**_block("CIFAR-10 / 16/255"),
             **{f"{d} / 24/255 / {m}": _EPS24 for d in ("CIFAR-10", "Imagenette") for m in ("Clean", "Adv", "Sum")},
             **{f"Imagenette / 16/255 / {m}": _BLOCK.format("Imagenette / 16/255", " --dataset imagenette --model "
                                                            "resnet34") for m in ("Clean", "Adv", "Sum")}},
    suites=(("autoattack", None),), seeds=(0,), n_eval=10000,
    threat_text="Linf 16/255", attack_versions="AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square), seed 0",
    compute="5 defenses x PRN-20 x 100 epochs: ~6 h each on a 1080 Ti; Imagenette ResNet-34 ~1 day each",
    discrepancies=(*_DISC, "DAT's FOSC threshold decays over 50 epochs at 16/255 and 24/255 (App. A).",
                   "Training PGD at large eps: 10 steps of eps/4 (the paper's 10 x 2/255 cannot reach 24/255)."),
))
