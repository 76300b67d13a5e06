"""SOAR (ICLR 2021 submission): recipes of Tables 1-3, 7, 11, 12 and 14-20 (ResNet-10 without BatchNorm)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from advbench.papers.recipes import Claim, ColumnRecipe, RowRecipe, Source, Split, TableRecipe, no_recipe, register

if TYPE_CHECKING:
    from advbench.attacks.suites import SuiteEntry

_SCHED = {"epochs": 200, "batch_size": 128, "lr": 0.1, "schedule": "multistep", "milestones": [100, 150],
          "weight_decay": 2e-4, "momentum": 0.9, "model_options": {"bn": False}}
_TRADES = {"epochs": 120, "lr": 0.1, "milestones": [75, 90, 100]}
_STEP = "2/255"
#: "results of all methods on ResNet10 are obtained by averaging over 3 independently initialized and trained
#: models" (Sec. 5; App. E: "All results on ResNet10 are obtained by averaging over 3 independently initialized and
#: trained models")
_SEEDS = (0, 1, 2)
#: SOAR: "It is trained for a total of 200 epochs" with no early stopping on CIFAR-10 (App. E.2, E.9): the full
#: training set, the last epoch (the other rows' selection is not stated: the same)
_SPLIT = Split(0, "last", "'It is trained for a total of 200 epochs' (App. E.2): no checkpoint selection stated "
                          "except ADV's, the full training set")
#: ADV: "we save the model at the end of every epoch, and the final evaluation is based on the one with the highest
#: PGD20 accuracy" (App. E.2; split not stated): held out from the training set here, never the test set
_ADV_SPLIT = Split(None, "val-robust", "'the final evaluation is based on the one with the highest PGD20 accuracy' "
                                       "(App. E.2, split not stated): selected on held-out training images with "
                                       "PGD-20, not on the test set")
#: TRADES and MART inner attacks: their public repositories' settings (10 steps of 0.007 from 0.001 N(0, I))
_REPO_STEP = {"step_size": 0.007}
_WRN_TRAIN = {"model_options": {}}  # WRN-34-10 keeps its BatchNorm (the ResNet-10 rows drop it)


def _wrn_rows(prefix: str, names: tuple[str, ...]) -> dict[str, RowRecipe]:
    """The WideResNet rows: the paper evaluates public checkpoints (and an authors-trained Standard); the recipe
    trains a WRN-34-10 with the row's defense at paper scale instead (too slow for smoke scale)."""
    res = _resnet_rows("")
    return {f"{prefix}{n}": dataclasses.replace(res[n], model="wrn-34-10", smoke=False, seeds=(0,),
                                                train={**res[n].train, **_WRN_TRAIN}) for n in names}


_WRN_DISC = ("WideResNet rows: the paper evaluates public checkpoints (ADV: MadryLab/cifar10_challenge; TRADES, MART, "
             "MMA: their authors' repositories) and an authors-trained Standard WRN-34-10; the recipe trains a "
             "WRN-34-10 per row with the row's defense and the table's schedule instead (paper scale only). The "
             "public checkpoints themselves can be attacked with 'advbench attack --model-module'.")


def _resnet_rows(prefix: str) -> dict[str, RowRecipe | str]:
    return {
        f"{prefix}Standard": RowRecipe("standard"),
        f"{prefix}ADV": RowRecipe("pgd-at", {"steps": 10, "step_size": "2/255"}, split=_ADV_SPLIT,
                                  train={"val_attack_steps": 20}),
        f"{prefix}TRADES": RowRecipe("trades", {"beta": 9.0, **_REPO_STEP}, train=_TRADES),
        f"{prefix}MART": RowRecipe("mart", {"beta": 9.0, **_REPO_STEP}, train=_TRADES),
        f"{prefix}MMA": RowRecipe("mma", {"margin": "32/255"}),
        # "FOAR settings beyond the PGD1 init are not stated": SOAR's fine-tuning schedule (lr 0.004 ÷10 at 100)
        f"{prefix}FOAR": RowRecipe("foar", train={"lr": 0.004, "milestones": [100]}, from_standard=True),
        f"{prefix}SOAR": RowRecipe("soar", train={"lr": 0.004, "milestones": [100]}, from_standard=True),
    }


_T1_COLS = {
    "Standard": ColumnRecipe("pgd", "Clean"),
    "FGSM": ColumnRecipe("pgd", "FGSM"),
    "PGD20": ColumnRecipe("pgd", "PGD-20"),
    "PGD100": ColumnRecipe("pgd", "PGD-100"),
    "PGD200": ColumnRecipe("pgd", "PGD-200"),
    "PGD1000": ColumnRecipe("pgd", "PGD-1000"),
    "PGD20-50": ColumnRecipe("pgd", "PGD-20-50"),
}
_DISC = (
    "SOAR: paper lr 0.004 ÷10 at epoch 100 (200 epochs) vs the authors' launch line lr 0.002, decay 90/100, "
    "150 epochs; the recipe keeps the paper's values. SOAR and FOAR fine-tune from the Standard run (the "
    "paper's pretrained init; FOAR's init is not stated, SOAR's is used); the other rows train from scratch "
    "at paper scale.",
    "ResNet means ResNet-10 without BatchNorm for every ResNet row (App. E.7).",
    "ADV training step size is not stated; 2/255 is used.",
    "Training set and checkpoint: every row trains on the full 50,000 training images and keeps its last epoch "
    "('It is trained for a total of 200 epochs', App. E.2; no other selection is stated), except ADV: 'the final "
    "evaluation is based on the one with the highest PGD20 accuracy' (split not stated): advbench holds out 1,000 "
    "training images and selects with PGD-20 on them (never on the test set).",
    "Seeds: 'results of all methods on ResNet10 are obtained by averaging over 3 independently initialized and "
    "trained models': seeds 0, 1, 2 (WideResNet rows: one run, the paper's single public checkpoints).",
    "TRADES and MART inner attacks: their public repositories' step 0.007 (10 steps from 0.001 N(0, I)); the "
    "repositories' eps 0.031 is kept at the table's 8/255 (0.0314), the budget the rows are attacked at.",
    "FOAR fine-tunes with SOAR's schedule (lr 0.004 ÷10 at 100): FOAR's settings beyond the PGD1 init are not "
    "stated (the spec: use SOAR's).",
)

register(TableRecipe(
    paper="soar", split=_SPLIT, table="1", dataset="cifar10", model="resnet10", norm="linf", eps="8/255", train=_SCHED,
    rows={
        **_wrn_rows("WideResNet / ", ("Standard", "ADV", "TRADES", "MART", "MMA")),
        **_resnet_rows("ResNet / "),
    },
    columns=_T1_COLS, suites=(("pgd", None),), seeds=_SEEDS, n_eval=10000,
    threat_text="Linf 8/255, white-box", attack_versions="suite pgd: FGSM, PGD-k step 2/255 uniform start, CE",
    compute="about 7 ResNet-10 runs x 120-200 epochs x 3 seeds: ~120 GPU-hours on one V100-class GPU, + 5 "
            "WRN-34-10 runs; PGD-1000 and PGD20-50 on 10k images ~2 GPU-hours per model",
    discrepancies=(*_DISC, _WRN_DISC),
    claims=(Claim("SOAR is more robust than ADV under PGD-20 (ResNet)", "greater", "PGD20", "ResNet / SOAR",
                  other="ResNet / ADV"),
            Claim("SOAR has the highest PGD-20 accuracy of the ResNet defenses", "max", "PGD20", "ResNet / SOAR",
                  among=tuple(f"ResNet / {r}" for r in ("ADV", "TRADES", "MART", "MMA", "FOAR"))),
            Claim("SOAR is more robust than ADV under PGD-20 with 50 restarts (ResNet)", "greater", "PGD20-50",
                  "ResNet / SOAR", other="ResNet / ADV")),
))
_RES = {k.removeprefix("ResNet / "): v for k, v in _resnet_rows("ResNet / ").items()}
register(TableRecipe(
    paper="soar", split=_SPLIT, table="15", dataset="cifar10", model="resnet10", norm="linf", eps="8/255", train=_SCHED,
    rows=dict(_RES), columns={k: v for k, v in _T1_COLS.items() if k not in ("PGD100", "PGD200")},
    suites=(("pgd", None),), seeds=_SEEDS, n_eval=10000,
    threat_text="Linf 8/255, white-box", attack_versions="suite pgd: FGSM, PGD-k step 2/255 uniform start, CE",
    compute="7 ResNet-10 runs x 3 seeds x 120-200 epochs: ~120 GPU-hours",
    discrepancies=_DISC + ("Table 15 reports mean and std over 3 models; the recipe trains seeds 0, 1, 2.",),
))
_COMPONENTS = {"Untargeted APGD-CE": "APGD-CE", "Targeted APGD-DLR": "APGD-T", "Targeted FAB": "FAB-T",
               "Square Attack": "Square"}
register(TableRecipe(
    paper="soar", split=_SPLIT, table="3", dataset="cifar10", model="resnet10", norm="linf", eps="8/255", train=_SCHED,
    rows={k: v for k, v in _RES.items() if k != "Standard"},
    columns={f"{printed} / {e}/255": ColumnRecipe("autoattack-components", label, eps=f"{e}/255")
             for printed, label in _COMPONENTS.items() for e in (8, 6, 4)},
    suites=(("autoattack-components", "8/255,6/255,4/255"),), seeds=_SEEDS, n_eval=10000,
    threat_text="Linf 8/255, 6/255, 4/255 (models trained at 8/255)",
    attack_versions="AutoAttack components run individually (standard settings): APGD-CE, APGD-T, FAB-T, Square",
    compute="6 ResNet-10 runs x 3 seeds (shared with Table 1) + AutoAttack components at 3 radii: ~18 GPU-hours "
            "of attacks",
    discrepancies=_DISC,
))
register(TableRecipe(
    paper="soar", split=_SPLIT, table="11", dataset="svhn", model="resnet10", norm="linf", eps="8/255",
    train={**_SCHED, "lr": 0.01},
    rows={"Standard": RowRecipe("standard"),
          "ADV": "quoted from Wang & Zhang (2019), WideResNet (PGD-AT on ResNet-10 does not learn on SVHN)",
          "TRADES": RowRecipe("trades", {"beta": 9.0, **_REPO_STEP}, train=_TRADES), "SOAR": _RES["SOAR"]},
    columns=dict(_T1_COLS), suites=(("pgd", None),), seeds=_SEEDS, n_eval=26032,
    threat_text="Linf 8/255, white-box", attack_versions="suite pgd: FGSM, PGD-k step 2/255 uniform start, CE",
    compute="3 ResNet-10 runs on SVHN: ~15 GPU-hours",
    discrepancies=_DISC + ("SVHN: the paper sweeps the LR and stops SOAR at epoch 130; lr 0.01 is used here.",),
))
_SWEEP_COLS = {"Standard": ColumnRecipe("pgd", "Clean"), "FGSM": ColumnRecipe("pgd", "FGSM"),
               "PGD20": ColumnRecipe("pgd", "PGD-20"), "PGD100": ColumnRecipe("pgd", "PGD-100"),
               "PGD200": ColumnRecipe("pgd", "PGD-200"), "PGD20-50": ColumnRecipe("pgd", "PGD-20-50")}
_SWEEP = dict(dataset="cifar10", model="resnet10", norm="linf", eps="8/255", train=_SCHED, suites=(("pgd", None),),
              seeds=_SEEDS, n_eval=10000, threat_text="Linf 8/255, white-box",
              attack_versions="suite pgd: FGSM, PGD-k step 2/255 uniform start, CE")
_BETAS = ("15", "13", "11", "9", "7", "5", "3", "1", "0.5", "0.1")
for _t, _d in (("17", "trades"), ("18", "mart")):
    register(TableRecipe(
        paper="soar", split=_SPLIT, table=_t, **_SWEEP,
        rows={f"β={b}": RowRecipe(_d, {"beta": float(b), **_REPO_STEP}, train=_TRADES) for b in _BETAS},
        columns=dict(_SWEEP_COLS),
        compute=f"10 {_d.upper()} ResNet-10 runs x 120 epochs: ~60 GPU-hours (the beta = 9 run is shared with Table 1)",
        discrepancies=(*_DISC[1:], f"{_d.upper()} schedule: 120 epochs, lr 0.1 ÷10 at 75/90/100 (App. E.2)."),
    ))
register(TableRecipe(
    paper="soar", split=_SPLIT, table="19", **_SWEEP,
    rows={f"Margin={m}": RowRecipe("mma", {"margin": f"{m}/255"}) for m in (12, 20, 32, 48, 60, 72)},
    columns=dict(_SWEEP_COLS),
    compute="6 MMA ResNet-10 runs (50k iterations each): ~30 GPU-hours (margin 32 is shared with Table 1)",
    discrepancies=(*_DISC[1:], "Margins printed without units; read as k/255 (the MMA code's hinge_maxeps).",
                   "MMA's 50k-iteration schedule (lr 0.3 -> 0.009) is replaced by the table's 200-epoch SGD "
                   "schedule."),
))
register(TableRecipe(
    paper="soar", split=_SPLIT, table="20", **{**_SWEEP, "n_eval": 10000},
    rows={f"init={label}": RowRecipe("foar", {"init": init}, train={"lr": 0.004, "milestones": [100]},
                                     from_standard=True)
          for label, init in (("zero", "zero"), ("rand", "rand"), ("PGD1", "pgd1-half"))},
    columns={**_SWEEP_COLS, "PGD1000": ColumnRecipe("pgd", "PGD-1000")},
    compute="3 FOAR ResNet-10 fine-tuning runs x 200 epochs: ~15 GPU-hours",
    discrepancies=(*_DISC, "The printed header is probably shifted by one column (RECON: the last column may be a "
                           "black-box PGD20 transfer); the recipe fills the printed labels literally.",
                   "FOAR's init options: zero = no perturbation before the expansion point, rand = uniform "
                   "eps/2 start, PGD1 = the paper's text reading (pgd1-half)."),
))
register(TableRecipe(
    paper="soar", split=_SPLIT, table="14", dataset="cifar10", model="resnet10", norm="linf", eps="8/255", train=_SCHED,
    rows={"CNN6": RowRecipe("soar", train={"lr": 0.004, "milestones": [100]}, model="cnn6", smoke_model="cnn6",
                            from_standard=True),
          "CNN8": RowRecipe("soar", train={"lr": 0.004, "milestones": [100]}, model="cnn8", smoke_model="cnn8",
                            from_standard=True),
          "ResNet-10": RowRecipe("soar", train={"lr": 0.004, "milestones": [100]}, smoke=False,
                                 from_standard=True)},
    columns={k: v for k, v in _SWEEP_COLS.items() if k in ("Standard", "PGD20", "PGD100", "PGD200")},
    suites=(("pgd", None),), seeds=(0,), n_eval=10000, threat_text="Linf 8/255, white-box",
    attack_versions="suite pgd: PGD-k step 2/255 uniform start, CE",
    compute="a standard and a SOAR run per architecture (CNN6, CNN8, ResNet-10) x 200 epochs: ~25 GPU-hours",
    discrepancies=(*_DISC, "CNN6/CNN8 are not specified beyond '6-layer (8-layer) convolutional network': the "
                           "Keras CIFAR-10 example CNN (cnn6) and it plus a conv128 pair (cnn8), no BatchNorm.",
                   "Smoke scale runs the CNN6 and CNN8 rows only (ResNet-10 is too slow on a CPU)."),
))


def define_suites() -> dict[str, tuple[list[SuiteEntry], str]]:
    """The suites of SOAR's black-box tables (registered by :mod:`advbench.papers.suites` on first lookup)."""
    from advbench.attacks.suites import SuiteEntry

    return {
        "soar-blackbox": ([
            SuiteEntry("SimBA", "simba"),
            SuiteEntry("Transfer-PGD20", "transfer", {"method": "pgd", "steps": 20, "step_size": _STEP}),
            SuiteEntry("Transfer-PGD1000", "transfer", {"method": "pgd", "steps": 1000, "step_size": _STEP}),
        ], "SOAR Tables 2/12/16: SimBA (pixel, 1000 iterations) and PGD-20 / PGD-1000 (step 2/255) crafted on an "
           "independently trained standard model (--source)"),
        "soar-transfer-w": ([
            SuiteEntry("Transfer-PGD20-W", "transfer", {"method": "pgd", "steps": 20, "step_size": _STEP}),
            SuiteEntry("Transfer-PGD1000-W", "transfer", {"method": "pgd", "steps": 1000, "step_size": _STEP}),
        ], "SOAR Tables 2/16 -W columns: PGD-20 / PGD-1000 (step 2/255) crafted on a standard WRN-34-10 (--source)"),
        "soar-l2": ([SuiteEntry("ℓ2-PGD100", "pgd", {"steps": 100})],
                    "SOAR Tables 9/13: L2 PGD-100 (step eps/4, uniform start) at each eps"),
        "soar-l2-transfer": ([SuiteEntry("Transfer", "transfer", {"method": "pgd", "steps": 100})],
                             "SOAR Tables 9/13: L2 PGD-100 crafted on an independently trained standard ResNet-10"),
        "soar-confidence": ([SuiteEntry(c, "confidence", {"perturb": m})
                             for c, m in (("Standard", "none"), ("Random", "random"), ("PGD1", "pgd1"))],
                            "SOAR Table 5: mean max softmax probability at clean, random and one-step PGD inputs"),
        "soar-loss-nz": ([SuiteEntry(f"n = {n}", "soar-loss", {"n_z": n}) for n in (1, 10, 100)],
                         "SOAR Table 8: SOAR's regularized loss l(x') + R(x'; z, h) at the PGD1 expansion point, R "
                         "averaged over n = 1, 10, 100 draws of z"),
        "soar-relaxation": ([SuiteEntry("ℓ(x + δ∞)", "adv-loss", {"steps": 20}, norm="linf", eps="8/255"),
                             SuiteEntry("ℓ(x + δ2)", "adv-loss", {"steps": 100}, norm="l2", eps="1.74")],
                            "SOAR Table 4: CE at Linf PGD-20 (8/255) and at L2 PGD-100 (1.74) points"),
        "soar-init": ([
            SuiteEntry("PGD-20", "pgd", {"steps": 20, "step_size": _STEP}),
            SuiteEntry("Transfer-PGD20", "transfer", {"method": "pgd", "steps": 20, "step_size": _STEP}),
        ], "SOAR Table 7: white-box PGD-20 and PGD-20 transferred from an independently trained standard model"),
    }


_BB_COLS = {"SimBA": ColumnRecipe("soar-blackbox", "SimBA"),
            "PGD20-R": ColumnRecipe("soar-blackbox", "Transfer-PGD20"),
            "PGD1000-R": ColumnRecipe("soar-blackbox", "Transfer-PGD1000"),
            "PGD20-W": ColumnRecipe("soar-transfer-w", "Transfer-PGD20-W"),
            "PGD1000-W": ColumnRecipe("soar-transfer-w", "Transfer-PGD1000-W")}
#: the -W source: "a standard WRN-34-10 trained separately from the defence models on the unperturbed training set"
_W_SOURCE = {"soar-transfer-w": Source(model="wrn-34-10", train={"model_options": {}}, smoke_model="cnn8",
                                       label="standard WRN-34-10 source")}
_BB = dict(norm="linf", eps="8/255", suites=(("soar-blackbox", None),), source="standard",
           threat_text="Linf 8/255, black-box (SimBA; PGD transferred from an independently trained standard "
                       "ResNet-10)",
           attack_versions="suite soar-blackbox: SimBA pixel 1000 iterations; transfer PGD-20/PGD-1000 step 2/255 "
                           "(last iterate on the source)")
_BB_DISC = (*_DISC, "The transfer source is a standard run of the same recipe with seed + 1000 ('independently "
                    "trained'); SimBA variant (pixel) and budget are not stated.",
            "-W columns: a standard WRN-34-10 (BatchNorm on) with the table's schedule, seed + 1000; smoke scale "
            "replaces it by the CNN8 (another architecture than the smoke rows', as WRN is to ResNet-10).")
register(TableRecipe(
    paper="soar", split=_SPLIT, table="2", dataset="cifar10", model="resnet10", train=_SCHED, **_BB,
    rows={**_wrn_rows("WideResNet / ", ("ADV", "TRADES", "MART", "MMA")),
          **{k: v for k, v in _resnet_rows("ResNet / ").items() if k != "ResNet / Standard"}},
    columns=dict(_BB_COLS), seeds=_SEEDS, n_eval=10000, sources=_W_SOURCE,
    compute="the Table 1 ResNet-10 runs (3 seeds) + 3 standard source runs; SimBA on 10k images ~1 GPU-hour per "
            "model",
    discrepancies=(*_BB_DISC, _WRN_DISC),
))
register(TableRecipe(
    paper="soar", split=_SPLIT, table="16", dataset="cifar10", model="resnet10", train=_SCHED, **_BB,
    rows={k: v for k, v in _RES.items() if k != "Standard"}, columns=dict(_BB_COLS), seeds=_SEEDS,
    sources=_W_SOURCE,
    n_eval=10000, compute="the Table 15 runs (3 seeds) + 3 standard source runs",
    discrepancies=(*_BB_DISC, "Mean and std over 3 models: seeds 0, 1, 2 (sources seeds 1000-1002)."),
))
register(TableRecipe(
    paper="soar", split=_SPLIT, table="12", dataset="svhn", model="resnet10", train={**_SCHED, "lr": 0.01}, **_BB,
    rows={"TRADES": RowRecipe("trades", {"beta": 9.0, **_REPO_STEP}, train=_TRADES), "SOAR": _RES["SOAR"]},
    columns={"SimBA": _BB_COLS["SimBA"], "PGD20": _BB_COLS["PGD20-R"], "PGD1000": _BB_COLS["PGD1000-R"]},
    seeds=_SEEDS, n_eval=26032, compute="the Table 11 TRADES and SOAR runs + one standard SVHN source run",
    discrepancies=(*_BB_DISC, "SVHN: lr 0.01 (the paper sweeps the LR and stops SOAR at epoch 130)."),
))
register(TableRecipe(
    paper="soar", split=_SPLIT, table="7", dataset="cifar10", model="resnet10", norm="linf", eps="8/255", train=_SCHED,
    rows={f"SOAR - {label} init": RowRecipe("soar", {"init": init}, train={"lr": 0.004, "milestones": [100]},
                                            from_standard=True)
          for label, init in (("zero", "zero"), ("rand", "rand"), ("PGD1", "pgd1-half"))},
    columns={"Standard accuracy": ColumnRecipe("soar-init", "Clean"),
             "White-box PGD20": ColumnRecipe("soar-init", "PGD-20"),
             "Black-box PGD20": ColumnRecipe("soar-init", "Transfer-PGD20")},
    suites=(("soar-init", None),), source="standard", seeds=_SEEDS, n_eval=10000,
    threat_text="Linf 8/255, white-box and transferred PGD-20",
    attack_versions="suite soar-init: PGD-20 step 2/255; PGD-20 crafted on an independently trained standard "
                    "ResNet-10",
    compute="3 SOAR fine-tuning runs x 200 epochs + a standard source run: ~20 GPU-hours",
    discrepancies=(*_BB_DISC, "Black-box column rebuilt from scrambled OCR (RECON)."),
))
_L2_EPS = ("60/255", "120/255", "255/255", "1.74")
_L2 = {"norm": "l2", "eps": "1.74"}
#: "all l2 adversaries used during ADV and TRADES are generated with 10-step PGD (eps = 1.74) and a step size of 0.44"
_ADV_L2 = RowRecipe("pgd-at", {"steps": 10, "step_size": 0.44}, **_L2)
_TRADES_L2 = RowRecipe("trades", {"beta": 9.0, "steps": 10, "step_size": 0.44}, train=_TRADES, **_L2)
_L2_DISC = (*_DISC[:3], "ADV and TRADES are trained under L2 (PGD-10, eps 1.74, step 0.44, App. E.5); SOAR is the "
                        "Linf-trained SOAR of Table 1 ('models trained with SOAR to be robust against Linf attacks "
                        "with eps = 8/255 should also obtain improved robustness against L2 attacks with eps = 1.74').",
            "L2 PGD-100 step: printed '20ε' (ambiguous); eps/4 (advbench's default) is used.",
            "Transfer: L2 PGD-100 at the last eps crafted on an independently trained standard ResNet-10 (seed + "
            "1000).")
register(TableRecipe(
    paper="soar", split=_SPLIT, table="9", dataset="cifar10", model="resnet10", norm="linf", eps="8/255", train=_SCHED,
    rows={"ADV": _ADV_L2, "TRADES": _TRADES_L2, "SOAR": _RES["SOAR"]},
    columns={**{f"ℓ2-PGD100 / {e}": ColumnRecipe("soar-l2", "ℓ2-PGD100", eps=e) for e in _L2_EPS},
             "Transfer / 1.74": ColumnRecipe("soar-l2-transfer", "Transfer", eps="1.74")},
    suites=(("soar-l2", ",".join(_L2_EPS), "l2"), ("soar-l2-transfer", "1.74", "l2")), source="standard",
    seeds=_SEEDS, n_eval=10000, threat_text="L2 60/255 to 1.74 (white-box PGD-100) and L2 1.74 transfer",
    attack_versions="suite soar-l2: L2 PGD-100 (step eps/4, uniform start); suite soar-l2-transfer: L2 PGD-100 "
                    "crafted on a standard ResNet-10",
    compute="2 L2-trained ResNet-10 runs + the Table 1 SOAR run + a standard source: ~20 GPU-hours",
    discrepancies=_L2_DISC,
))
_AA_L2 = ("1.74", "1.0", "0.5")
register(TableRecipe(
    paper="soar", split=_SPLIT, table="10", dataset="cifar10", model="resnet10", norm="linf", eps="8/255", train=_SCHED,
    rows={"ADV": _ADV_L2, "TRADES": _TRADES_L2, "SOAR": _RES["SOAR"]},
    columns={f"{printed} / {e}": ColumnRecipe("autoattack-components", label, eps=e)
             for printed, label in _COMPONENTS.items() for e in _AA_L2},
    suites=(("autoattack-components", ",".join(_AA_L2), "l2"),), seeds=_SEEDS, n_eval=10000,
    threat_text="L2 1.74, 1.0, 0.5 (AutoAttack components individually)",
    attack_versions="AutoAttack components run individually (standard settings, L2): APGD-CE, APGD-T, FAB-T, Square",
    compute="the Table 9 runs + AutoAttack components at 3 L2 radii: ~6 GPU-hours of attacks",
    discrepancies=_L2_DISC[:4],
))
_SVHN_L2_EPS = ("60/255", "120/255", "255/255", "1.739")
register(TableRecipe(
    paper="soar", split=_SPLIT, table="13", dataset="svhn", model="resnet10", norm="linf", eps="8/255",
    train={**_SCHED, "lr": 0.01},
    rows={"Standard": RowRecipe("standard"), "TRADES": RowRecipe("trades", {"beta": 9.0, "steps": 10,
                                                                         "step_size": 0.44}, train=_TRADES,
                                                                norm="l2", eps="1.739"),
          "SOAR": _RES["SOAR"]},
    columns={"Standard": ColumnRecipe("soar-l2", "Clean"),
             **{f"ℓ2-PGD100 / {e}": ColumnRecipe("soar-l2", "ℓ2-PGD100", eps=e) for e in _SVHN_L2_EPS},
             "Transfer / 1.739": ColumnRecipe("soar-l2-transfer", "Transfer", eps="1.739")},
    suites=(("soar-l2", ",".join(_SVHN_L2_EPS), "l2"), ("soar-l2-transfer", "1.739", "l2")), source="standard",
    seeds=_SEEDS, n_eval=26032, threat_text="L2 60/255 to 1.739 (white-box PGD-100) and L2 1.739 transfer (SVHN)",
    attack_versions="suite soar-l2: L2 PGD-100 (step eps/4, uniform start); suite soar-l2-transfer: L2 PGD-100 "
                    "crafted on a standard ResNet-10",
    compute="the Table 11 Standard and SOAR runs + an L2 TRADES run + a standard source on SVHN",
    discrepancies=(*_L2_DISC, "SVHN: lr 0.01; the TRADES row is read as L2-trained (its clean 91.94 differs from "
                              "Table 11's Linf TRADES, 84.48; NOT STATED)."),
))
register(TableRecipe(
    paper="soar", split=_SPLIT, table="5", dataset="cifar10", model="resnet10", norm="linf", eps="8/255", train=_SCHED,
    rows={"Standard": RowRecipe("standard"), "ADV": _RES["ADV"],
          **{f"SOAR - {label} init": RowRecipe("soar", {"init": init}, train={"lr": 0.004, "milestones": [100]},
                                               from_standard=True)
             for label, init in (("zero", "zero"), ("random", "rand"), ("PGD1", "pgd1-half"))}},
    columns={c: ColumnRecipe("soar-confidence", c, value="mean_max_prob") for c in ("Standard", "Random", "PGD1")},
    suites=(("soar-confidence", None),), seeds=_SEEDS, n_eval=10000,
    threat_text="Linf 8/255 (random and one-step perturbations of the test inputs)",
    attack_versions="suite soar-confidence: mean max softmax probability (%) at clean inputs, uniform noise in the "
                    "8/255 box, and one signed-gradient step of 8/255",
    compute="the Table 1/7 runs (3 seeds): minutes of evaluation",
    discrepancies=(*_DISC, "PGD1 is read as one signed-gradient step of size eps from the clean input; std over "
                           "3 seeds (the paper's ± is not explained)."),
))
register(TableRecipe(
    paper="soar", split=_SPLIT, table="4", dataset="cifar10", model="resnet10", norm="linf", eps="8/255", train=_SCHED,
    rows={"Beginning of SOAR": RowRecipe("standard"), "End of SOAR": _RES["SOAR"]},
    columns={"ℓ(x + δ∞)": ColumnRecipe("soar-relaxation", "ℓ(x + δ∞)", value="loss_sum_per_batch"),
             "ℓ(x + δ2)": ColumnRecipe("soar-relaxation", "ℓ(x + δ2)", value="loss_sum_per_batch")},
    suites=(("soar-relaxation", None),), seeds=_SEEDS, n_eval=10000,
    threat_text="Linf PGD-20 at 8/255 vs L2 PGD-100 at 1.74",
    attack_versions="suite soar-relaxation: CE at the last PGD iterate (Linf 20 steps 8/255; L2 100 steps 1.74)",
    compute="the Table 1 Standard and SOAR runs: minutes of evaluation",
    discrepancies=(*_DISC, "'Beginning of SOAR' is the Standard run SOAR fine-tunes from; the loss is shown as a "
                           "sum over a batch of 128 (the mean is stored too): sum vs mean is NOT STATED."),
))
register(TableRecipe(
    paper="soar", split=_SPLIT, table="8", dataset="cifar10", model="resnet10", norm="linf", eps="8/255", train=_SCHED,
    rows={"Beginning of SOAR": RowRecipe("standard"), "End of SOAR": _RES["SOAR"]},
    columns={f"n = {n}": ColumnRecipe("soar-loss-nz", f"n = {n}", value="soar_loss_mean") for n in (1, 10, 100)},
    suites=(("soar-loss-nz", None),), seeds=_SEEDS, n_eval=10000,
    threat_text="Linf 8/255: SOAR's regularized loss at the PGD1 expansion point (no attack)",
    attack_versions="suite soar-loss-nz: l(x') + R(x'; z, h), h 0.01, lambda 1, R averaged over n draws of z",
    compute="the Table 1 Standard and SOAR runs: minutes of evaluation (n = 100 costs 100 extra input-gradient "
            "passes per image)",
    discrepancies=(*_DISC, "'Beginning of SOAR' is the Standard run SOAR fine-tunes from; the loss is the mean over "
                           "test images (the paper does not say over which images or batches it was measured)."),
))
for _p, _t, _why, _kind in (
    ("soar", "6", "literature numbers quoted from the CURE and LLR papers", "quoted"),
):
    no_recipe(_p, _t, _why, kind=_kind)
