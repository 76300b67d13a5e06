"""advbench beside its peers on the same work: training steps vs IBM ART's trainers, PGD vs torchattacks and
ART, the AutoAttack adapter vs a direct pyautoattack call.

Every comparison runs the same model (a copy with the same weights), the same batch and the same
hyperparameters on both sides, in one process: after a warm-up, rounds alternate between the sides
(A B, B A, ...), and the table gives the ratio of median times peer / advbench (> 1: advbench is faster)
with its min–max over the rounds' paired ratios. Peers are the optional extra ``bench``
(``pip install -e ".[bench]"``: adversarial-robustness-toolbox, torchattacks).

    python benchmarks/peers.py                                   # small-cnn, batch 128, CPU
    python benchmarks/peers.py --model preact-resnet18 --batch 32 --skip pgd-100,autoattack
    python benchmarks/peers.py --threads 1 --rounds 5 --markdown docs-table.md

What is compared (ε = 8/255 Linf, step 2/255, 10 attack steps for training):

- ``trades``: advbench ``trades`` (β 6, KL-PGD-10, eval-mode BN while crafting) vs ART
  ``AdversarialTrainerTRADESPyTorch`` (β 6, its attack: ART PGD-10 with a random start) one batch through
  ``_batch_process`` (what ART's ``fit`` runs per batch).
- ``trades-awp``: advbench ``trades-awp`` (γ 0.005, after the warm-up) vs ART ``AdversarialTrainerAWPPyTorch``
  in TRADES mode with the weight perturbation on.
- ``pgd-at``: advbench ``pgd-at`` (PGD-10, eval-mode BN while crafting, as ART) vs ART ``AdversarialTrainer``
  (ratio 1, the trainer ``AdversarialTrainerMadryPGD`` wraps) fitting one batch.
- ``pgd-20``/``pgd-100``: advbench's ``pgd_perturb`` with ``select=last`` (no early exit: exactly the peers'
  work; evaluation's early exit only makes advbench faster) vs ``torchattacks.PGD`` and ART
  ``ProjectedGradientDescentPyTorch`` (one random start), eval-mode model.
- ``autoattack``: the ``autoattack`` adapter (components one after another on the still-robust points,
  resumable state) vs ``pyautoattack.AutoAttack.run_standard_evaluation`` on the same images, version
  ``custom`` with APGD-CE and APGD-T (``--aa-components``) so that a CPU run stays short.
"""

from __future__ import annotations

import argparse
import copy
import os

os.environ.setdefault("TQDM_DISABLE", "1")  # ART's progress bars
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from advbench.attacks import ATTACKS
from advbench.attacks.pgd import pgd_perturb
from advbench.defenses import StepContext, build_defense
from advbench.models import build_model
from advbench.threat import ThreatModel

EPS, STEP, K = 8 / 255, 2 / 255, 10


@dataclass
class Row:
    """One comparison: the median seconds of each side and the paired ratios peer / advbench."""

    work: str
    peer: str
    ours: list[float]
    theirs: list[float]
    note: str = ""

    @property
    def ratio(self) -> float:
        return statistics.median(self.theirs) / statistics.median(self.ours)

    @property
    def spread(self) -> tuple[float, float]:
        r = [t / o for o, t in zip(self.ours, self.theirs, strict=True)]
        return min(r), max(r)


def interleaved(ours: Callable[[], None], theirs: Callable[[], None], rounds: int, warmup: int) -> tuple[list, list]:
    """Seconds of ``rounds`` calls of each side, alternating which goes first, after ``warmup`` calls of each."""
    for _ in range(warmup):
        ours()
        theirs()
    a, b = [], []
    for r in range(rounds):
        pair = [(ours, a), (theirs, b)] if r % 2 == 0 else [(theirs, b), (ours, a)]
        for fn, sink in pair:
            t0 = time.perf_counter()
            fn()
            sink.append(time.perf_counter() - t0)
    return a, b


def art_classifier(model: torch.nn.Module, lr: float, classes: int, shape: tuple[int, ...]):
    """ART's PyTorchClassifier around ``model`` (inputs in [0, 1], SGD as advbench's trainer)."""
    from art.estimators.classification import PyTorchClassifier

    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    return PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), optimizer=opt, input_shape=shape,
                             nb_classes=classes, clip_values=(0.0, 1.0), device_type="cpu")


def art_pgd(clf, steps: int, batch: int):
    from art.attacks.evasion import ProjectedGradientDescentPyTorch

    return ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=EPS, eps_step=STEP, max_iter=steps,
                                           num_random_init=1, batch_size=batch, verbose=False)


def training_rows(base: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, args) -> list[Row]:
    """TRADES, TRADES-AWP and PGD-AT steps: advbench's defense step vs ART's trainer on one batch."""
    from art.defences.trainer import (
        AdversarialTrainer,
        AdversarialTrainerAWPPyTorch,
        AdversarialTrainerTRADESPyTorch,
    )

    threat = ThreatModel.parse("8/255", "linf")
    xn, yn = x.numpy(), y.numpy()
    shape, classes = tuple(x.shape[1:]), args.classes
    ctx = StepContext(epoch=50, step=0, steps_per_epoch=10, epochs=100, num_classes=classes)
    rows = []
    cases = {
        "trades": ({"beta": 6.0, "steps": K, "step_size": STEP}, "ART AdversarialTrainerTRADESPyTorch"),
        "trades-awp": ({"steps": K, "step_size": STEP, "warmup_epochs": 0}, "ART AdversarialTrainerAWPPyTorch "
                                                                            "(TRADES)"),
        "pgd-at": ({"steps": K, "step_size": STEP, "attack_bn_mode": "eval"}, "ART AdversarialTrainer (PGD-10)"),
    }
    for name, (options, peer) in cases.items():
        if name in args.skip:
            continue
        ours_model, their_model = copy.deepcopy(base).train(), copy.deepcopy(base).train()
        defense = build_defense(name, threat, options)
        opt = torch.optim.SGD(ours_model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        clf = art_classifier(their_model, 0.01, classes, shape)
        attack = art_pgd(clf, K, len(x))
        if name == "trades":
            trainer = AdversarialTrainerTRADESPyTorch(clf, attack, beta=6.0)

            def theirs(trainer=trainer):
                trainer._batch_process(xn.copy(), yn)
        elif name == "trades-awp":
            proxy = art_classifier(copy.deepcopy(base), 0.01, classes, shape)
            trainer = AdversarialTrainerAWPPyTorch(clf, proxy, attack, mode="TRADES", gamma=0.005, beta=6.0,
                                                   warmup=0)
            trainer._apply_wp = True  # after the warm-up, as advbench's side

            def theirs(trainer=trainer):
                trainer._batch_process(xn.copy(), yn)
        else:
            trainer = AdversarialTrainer(clf, attack, ratio=1.0)

            def theirs(trainer=trainer):
                trainer.fit(xn, yn, nb_epochs=1, batch_size=len(xn))

        def ours(defense=defense, model=ours_model, opt=opt):
            logs = defense.train_step(model, opt, x, y, ctx)
            {k: float(v) for k, v in logs.items()}  # what the trainer reads (once per interval) counts too

        a, b = interleaved(ours, theirs, args.rounds, args.warmup)
        rows.append(Row(f"{name} step", peer, a, b))
    return rows


def attack_rows(base: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, args) -> list[Row]:
    """PGD-20 / PGD-100 vs torchattacks and ART; the AutoAttack adapter vs a direct pyautoattack call."""
    import torchattacks

    model = copy.deepcopy(base).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    threat = ThreatModel.parse("8/255", "linf")
    xn, yn = x.numpy(), y.numpy()
    rows = []
    for steps in (20, 100):
        if f"pgd-{steps}" in args.skip:
            continue
        ta = torchattacks.PGD(model, eps=EPS, alpha=STEP, steps=steps, random_start=True)
        clf = art_classifier(model, 0.0, args.classes, tuple(x.shape[1:]))
        art = art_pgd(clf, steps, len(x))

        def ours(steps=steps):  # no early exit: the peers' work (on an untrained model the early exit would
            # drop every point after the first step and say nothing about speed)
            pgd_perturb(model, x, y, threat, steps=steps, alpha=STEP, select="last")

        a, b = interleaved(ours, lambda ta=ta: ta(x, y), args.rounds, args.warmup)
        rows.append(Row(f"PGD-{steps} (select=last)", "torchattacks.PGD", a, b))
        a, b = interleaved(ours, lambda art=art: art.generate(xn, y=yn), args.rounds, args.warmup)
        rows.append(Row(f"PGD-{steps} (select=last)", "ART ProjectedGradientDescentPyTorch", a, b))
    if "autoattack" not in args.skip:
        rows.append(autoattack_row(model, x, y, args))
    return rows


def autoattack_row(model, x, y, args) -> Row:
    """The adapter (``autoattack`` version custom) vs ``run_standard_evaluation`` with the same components."""
    from pyautoattack import AutoAttack

    comps = args.aa_components.split(",")
    threat = ThreatModel.parse(args.aa_eps, "linf")
    ours_attack = ATTACKS.get("autoattack")(threat, version="custom", attacks=comps)
    n = min(len(x), args.aa_n)
    xs, ys = x[:n], y[:n]

    def ours():
        ours_attack.perturb_ex(model, xs, ys)

    def theirs():
        aa = AutoAttack(model, norm="Linf", eps=threat.eps, version="custom", attacks=comps, seed=0,
                        device=xs.device)
        aa.verbose = False
        aa.apgd_targeted.n_target_classes = min(9, args.classes - 1)
        aa.fab.n_target_classes = min(9, args.classes - 1)
        aa.run_standard_evaluation(xs, ys, batch_size=n)

    a, b = interleaved(ours, theirs, args.rounds, 1)
    return Row(f"AutoAttack custom {'+'.join(comps)}, eps {args.aa_eps}, {n} images", "pyautoattack direct call",
               a, b)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="small-cnn")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    p.add_argument("--skip", default="", help="comma list of: trades, trades-awp, pgd-at, pgd-20, pgd-100, autoattack")
    p.add_argument("--aa-components", default="apgd-ce,apgd-t")
    p.add_argument("--aa-eps", default="1/255", help="AutoAttack budget (small: some points survive APGD-CE on "
                                                     "an untrained model, so every component runs)")
    p.add_argument("--aa-n", type=int, default=64)
    p.add_argument("--markdown", help="also write the table to this file")
    args = p.parse_args()
    args.skip = set(filter(None, args.skip.split(",")))
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = build_model(args.model, num_classes=args.classes, input_size=32)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(args.batch, 3, 32, 32, generator=g)
    y = torch.randint(0, args.classes, (args.batch,), generator=g)
    rows = training_rows(base, x, y, args) + attack_rows(base, x, y, args)
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    head = (f"`{' '.join(['python', *sys.argv])}` — {args.model}, batch {args.batch}, CPU "
            f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
            f"{torch.get_num_threads()}), torch {torch.__version__}, {args.rounds} interleaved rounds after "
            f"{args.warmup} warm-up; load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    lines = [head, "", "| work | peer | advbench s (median) | peer s (median) | peer / advbench (min–max) |",
             "|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r.spread
        lines.append(f"| {r.work} | {r.peer} | {statistics.median(r.ours):.3f} | {statistics.median(r.theirs):.3f} "
                     f"| {r.ratio:.2f}× ({lo:.2f}–{hi:.2f}) |")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
