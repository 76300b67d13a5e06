"""AutoAttack (Croce & Hein 2020) through the real implementation, ``pyautoattack``.

The adapter runs AutoAttack's components in the version's order, each on the points still robust after
the previous ones, exactly as the library's own loop does when its batch size covers the batch (so the
per-sample result equals a direct ``run_standard_evaluation(x, y, batch_size=len(x))`` call at the same
seed). The first component of a batch goes through ``AutoAttack.run_standard_evaluation`` (the library's
model checks and clean pass, once); the later ones call the component directly (:func:`run_component`), as
that loop does, without repeating the library's start-up.

Why not the library's ``state_path``: pyautoattack 0.2.0 cannot resume its own state files (it saves
the set of attacks as a string that never compares equal on reload, and its resumed branch uses an
unassigned ``y_adv``). The adapter therefore keeps its own per-batch state file inside the run
directory (``attacks/.<suite>.state/``; per shard ``attacks/.<suite>.rank<r>-of-<W>.state/`` when the
evaluation is sharded over W processes), written atomically after every component: robust flags, the
component that fooled each point and its adversarial images. A killed evaluation resumes at the next
component and gives the same per-sample result as an uninterrupted run. Files are named by the global
batch index, and AutoAttack reseeds itself for every batch, so a batch's result does not depend on
the process that ran it.

AutoAttack's sanity checks (randomised or dynamic defence, probability outputs, too many target
classes) log warnings; they are captured per batch and stored with the result (``flags``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from advbench import runs
from advbench.attacks.base import ATTACKS, Attack, Perturbation
from advbench.attacks.eot import EOTModule, batch_verdict
from advbench.errors import UserError
from advbench.threat import ThreatModel

COMPONENTS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
#: components whose DLR loss needs at least this many classes (pyautoattack's check_n_classes)
_MIN_CLASSES = {"apgd-dlr": 3, "apgd-t": 4}
STATE_FORMAT = "advbench-autoattack-state-v1"
EOT_VERDICT_SAMPLES = 10  # draws of the deterministic verdict with ``eot_samples`` > 1 (adaptive-pgd's default)


class _ListHandler(logging.Handler):
    """Collects the messages of WARNING-or-worse log records."""

    def __init__(self, sink: list[str]) -> None:
        super().__init__(level=logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


@contextlib.contextmanager
def capture_autoattack_messages(flags: list[str], other: list[str]) -> Iterator[None]:
    """Capture AutoAttack's check warnings (its ``auto-attack`` logger) into ``flags`` and Python
    warnings into ``other`` instead of printing them."""
    logger = logging.getLogger("auto-attack")
    handler = _ListHandler(flags)
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        other.extend(f"{w.category.__name__}: {w.message}" for w in caught)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def _reset_dynamic_check() -> None:
    """pyautoattack's dynamic-defence check counts calls in a module-level dict that it never resets;
    zero it so a dynamic model evaluated earlier in the process does not flag later ones."""
    from pyautoattack import checks

    for k in checks.funcs:
        checks.funcs[k] = 0


def make_autoattack(model: nn.Module, threat: ThreatModel, *, version: str, attacks: list[str] | None, seed: int,
                    device: torch.device, num_classes: int, n_target_classes: int | None = None,
                    n_restarts: int | None = None, n_queries: int | None = None, p_init: float | None = None,
                    eot_iter: int | None = None) -> Any:
    """A ``pyautoattack.AutoAttack`` for ``threat`` with the version's settings and optional overrides.

    Target classes are capped at ``num_classes - 1`` (the library's default 9 needs 10 classes).
    """
    from pyautoattack import AutoAttack

    norm = {"linf": "Linf", "l2": "L2"}[threat.norm]
    if version == "custom":
        aa = AutoAttack(model, attacks=list(attacks or []), device=device, eps=threat.eps, norm=norm, seed=seed,
                        version="custom")
    else:
        aa = AutoAttack(model, device=device, eps=threat.eps, norm=norm, seed=seed, version=version)
    aa.verbose = False
    n_t = n_target_classes if n_target_classes is not None else aa.apgd_targeted.n_target_classes
    n_t = max(1, min(n_t, num_classes - 1))
    aa.apgd_targeted.n_target_classes = n_t
    aa.fab.n_target_classes = n_t
    if n_restarts is not None:
        aa.apgd.n_restarts = n_restarts
        aa.fab.n_restarts = n_restarts
    if n_queries is not None:
        aa.square.n_queries = n_queries
    if p_init is not None:
        aa.square.p_init = p_init
    if eot_iter is not None:
        aa.apgd.eot_iter = eot_iter
    return aa


def run_component(aa: Any, comp: str, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One AutoAttack component on (x, y) as ``run_standard_evaluation`` runs it inside its loop (the component's
    settings, its fixed seed, no gradient outside the attack, the prediction on its result), without the
    library's per-call start-up: the model checks (five forwards for the randomness check, a traced forward
    for the dynamic check, one for the output range) and the clean pass, which the adapter already ran for the
    batch. Returns (images, predicted labels)."""
    if comp in ("apgd-ce", "apgd-dlr"):
        aa.apgd.loss = "ce" if comp == "apgd-ce" else "dlr"
        attack = aa.apgd
    elif comp == "apgd-t":
        attack = aa.apgd_targeted
    elif comp in ("fab", "fab-t"):
        aa.fab.targeted = comp == "fab-t"
        if comp == "fab-t":
            aa.fab.n_restarts = 1
        attack = aa.fab
    elif comp == "square":
        attack = aa.square
    else:
        raise ValueError(f"unknown AutoAttack component {comp!r}")
    attack.seed = aa.get_seed()
    with torch.no_grad():
        adv = attack.perturb(x, y)
        return adv, aa.get_logits(adv).max(dim=1)[1]


@dataclass
class _BatchState:
    """Progress of AutoAttack on one batch: components done, robust flags, who fooled each point."""

    done: list[str]
    robust: torch.Tensor
    fooled_by: list[str]
    x_adv: torch.Tensor
    flags: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    resumed: bool = False


class AutoAttackBase(Attack):
    """Shared engine of ``autoattack`` and its single components (``apgd-ce``, ``apgd-t``, ``fab-t``, ``square``)."""

    expensive = True

    component: ClassVar[str | None] = None

    def settings(self) -> dict[str, Any]:
        """Keyword arguments of :func:`make_autoattack` (version, attacks, seed, overrides)."""
        o = self.options
        return {"version": "standard", "attacks": None, "seed": o.seed,
                "n_target_classes": getattr(o, "n_target_classes", None), "n_restarts": getattr(o, "n_restarts", None),
                "n_queries": getattr(o, "n_queries", None), "p_init": getattr(o, "p_init", None)}

    def _state_paths(self) -> tuple[Path, Path] | None:
        ctx = self.context
        if ctx.state_dir is None:
            return None
        stem = f"{runs.slug(ctx.key or self.name, sep='_', default='attack')}.b{ctx.batch}"
        return ctx.state_dir / f"{stem}.json", ctx.state_dir / f"{stem}.pt"

    def _fingerprint(self, components: list[str], x: torch.Tensor, y: torch.Tensor) -> str:
        blob = json.dumps({"components": components, "threat": self.threat.to_dict(), "settings": self.settings(),
                           "n": int(x.shape[0]), "xsum": float(x.double().sum()), "ysum": int(y.sum())},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _load(self, fp: str, x: torch.Tensor) -> _BatchState | None:
        paths = self._state_paths()
        if paths is None or not paths[0].is_file():
            return None
        try:
            d = runs.read_json(paths[0])
            if d.get("format") != STATE_FORMAT or d.get("fingerprint") != fp:
                return None
            x_adv = x.clone()
            if d["fooled_idx"]:
                saved = torch.load(paths[1], map_location=x.device, weights_only=True)
                x_adv[torch.tensor(d["fooled_idx"], device=x.device)] = saved.to(x.dtype)
            return _BatchState(done=list(d["done"]), robust=torch.tensor(d["robust"], dtype=torch.bool,
                                                                         device=x.device),
                               fooled_by=list(d["fooled_by"]), x_adv=x_adv, flags=list(d["flags"]),
                               warnings=list(d["warnings"]), skipped=list(d["skipped"]), resumed=True)
        except (OSError, ValueError, KeyError, RuntimeError, EOFError):
            return None  # a torn or foreign file: start the batch again (same result, only slower)

    def _save(self, fp: str, st: _BatchState) -> None:
        paths = self._state_paths()
        if paths is None:
            return
        fooled_idx = [i for i, f in enumerate(st.fooled_by) if f not in ("", "clean")]
        if fooled_idx:
            runs.save_checkpoint(paths[1], st.x_adv[fooled_idx].detach().cpu())  # atomic torch.save
        runs.write_json(paths[0], {
            "format": STATE_FORMAT, "fingerprint": fp, "attack": self.name, "key": self.context.key,
            "batch": self.context.batch, "done": st.done, "robust": [bool(v) for v in st.robust.tolist()],
            "fooled_by": st.fooled_by, "fooled_idx": fooled_idx, "flags": st.flags, "warnings": st.warnings,
            "skipped": st.skipped})

    def _clear(self) -> None:
        paths = self._state_paths()
        if paths is not None:
            for p in paths:
                p.unlink(missing_ok=True)

    def _view(self, model: nn.Module) -> tuple[nn.Module, Any]:
        """(model AutoAttack attacks, judge of the result): with ``eot_samples`` > 1, the EOT view and its verdict."""
        k = int(getattr(self.options, "eot_samples", 1) or 1)
        if k <= 1:
            return model, lambda xs, ys: model(xs).argmax(1) == ys
        verdict = batch_verdict(model, EOT_VERDICT_SAMPLES, self.context.batch)
        return EOTModule(model, k, verdict), verdict.judge

    def perturb_ex(self, model, x, y, generator=None):
        """Run the components in order on the still-robust points; resume from the batch's state file."""
        net, judge = self._view(model)
        with torch.no_grad():
            logits = model(x)
        num_classes = int(logits.shape[1])
        settings = self.settings()
        aa = make_autoattack(net, self.threat, device=x.device, num_classes=num_classes, **settings)
        components = [self.component] if self.component else list(aa.attacks_to_run)
        fp = self._fingerprint(components, x, y)
        st = self._load(fp, x)
        if st is None:
            with torch.no_grad():
                robust = logits.argmax(1) == y if net is model else judge(x, y)
            st = _BatchState(done=[], robust=robust.clone(), fooled_by=["" if r else "clean" for r in robust.tolist()],
                             x_adv=x.clone())
        devices = [x.device.index or 0] if x.device.type == "cuda" else []
        started = False
        with torch.random.fork_rng(devices=devices):  # AutoAttack reseeds the global generator
            for comp in components:
                if comp in st.done or comp in st.skipped:
                    continue
                if num_classes < _MIN_CLASSES.get(comp, 0):
                    st.skipped.append(comp)
                    st.flags.append(f"{comp} skipped: its DLR loss needs at least {_MIN_CLASSES[comp]} classes, "
                                    f"the model has {num_classes}")
                    continue
                idx = st.robust.nonzero().squeeze(1)
                if len(idx) == 0:
                    break  # as AutoAttack: no robust points left, skip the remaining components
                with capture_autoattack_messages(st.flags, st.warnings):
                    if not started:  # the library's start-up (its model checks, a clean pass) once per batch
                        aa.attacks_to_run = [comp]
                        _reset_dynamic_check()
                        adv, y_adv = aa.run_standard_evaluation(x[idx], y[idx], batch_size=len(idx))
                        started = True
                    else:
                        adv, y_adv = run_component(aa, comp, x[idx], y[idx])
                fooled = (y_adv.to(y.device) != y[idx])
                hit = idx[fooled]
                st.robust[hit] = False
                st.x_adv[hit] = adv[fooled].to(x.dtype)
                for i in hit.tolist():
                    st.fooled_by[i] = comp
                st.done.append(comp)
                self._save(fp, st)
                self.context.emit("autoattack-component", component=comp)
        with torch.no_grad():
            final = judge(st.x_adv, y)
        mismatch = int((final != st.robust).sum())
        self._clear()
        info = {"components": components, "done": st.done, "skipped": st.skipped, "flags": sorted(set(st.flags)),
                "warnings": sorted(set(st.warnings)), "n_target_classes": aa.apgd_targeted.n_target_classes,
                "n_queries": aa.square.n_queries, "verdict_mismatch": mismatch, "resumed": st.resumed,
                "num_classes": num_classes}
        correct = final if net is not model else st.robust.clone()  # EOT: the verdict, not one noisy subset pass
        return Perturbation(st.x_adv, per_sample={"fooled_by": st.fooled_by}, info=info, correct=correct)

    def perturb(self, model, x, y, generator=None):
        """Adversarial images (see :meth:`perturb_ex`)."""
        return self.perturb_ex(model, x, y, generator).x_adv

    @classmethod
    def suited_to(cls, options, summary):
        """Saturated logits if a DLR or FAB component ran (scale-free: logit differences); a randomized model with
        ``eot_samples`` > 1. Not gradient-breaking parts (Square alone is a test, not a remedy), nor a randomized
        model otherwise: AutoAttack judges each point by one noisy pass, even with version=rand's EOT gradients."""
        comps = set((summary or {}).get("components") or ([cls.component] if cls.component else []))
        eot = {"randomized"} if int(options.get("eot_samples") or 1) > 1 else set()
        return eot | ({"saturated"} if comps & {"apgd-dlr", "apgd-t", "fab", "fab-t"} else set())

    @classmethod
    def summarize(cls, per_sample, info, correct, threat):
        """Version and components run, robust accuracy after each component, captured flags."""
        fooled_by = per_sample.get("fooled_by", [])
        n = max(1, len(fooled_by))
        components = info[0]["components"] if info else []
        counts = Counter(fooled_by)
        after, fooled_so_far = {}, counts.get("clean", 0)
        for comp in components:
            fooled_so_far += counts.get(comp, 0)
            after[comp] = (n - fooled_so_far) / n
        flags = Counter(f for b in info for f in b.get("flags", []))
        warns = Counter(w for b in info for w in b.get("warnings", []))
        return {
            "components": components,
            "robust_after": after,
            "fooled_by_component": {c: counts.get(c, 0) for c in components},
            "square_only": counts.get("square", 0) / n if "square" in components and len(components) > 1 else None,
            "flags": [{"message": m, "batches": k} for m, k in sorted(flags.items())],
            "warnings": [{"message": m, "batches": k} for m, k in sorted(warns.items())],
            "skipped": sorted({s for b in info for s in b.get("skipped", [])}),
            "n_target_classes": info[0]["n_target_classes"] if info else None,
            "n_queries": info[0]["n_queries"] if info else None,
            "verdict_mismatch": sum(b.get("verdict_mismatch", 0) for b in info),
            "resumed_batches": sum(1 for b in info if b.get("resumed")),
        }


@dataclass
class AutoAttackOptions:
    """AutoAttack version (standard, plus, rand, custom), custom component list, seed (fixed, default 0) and
    optional overrides of target classes (default 9, capped at classes-1), restarts, Square queries (5000)
    and EOT iterations (rand: 20); ``eot_samples`` > 1 attacks advbench's EOT view of the model (k draws per
    gradient, logits = log expected probability) and judges by the deterministic 10-draw verdict."""

    version: Literal["standard", "plus", "rand", "custom"] = "standard"
    attacks: list[str] = field(default_factory=list)
    seed: int = 0
    n_target_classes: int | None = None
    n_restarts: int | None = None
    n_queries: int | None = None
    eot_iter: int | None = None
    eot_samples: int = 1

    def validate(self) -> None:
        """Custom needs components; the fixed versions take none; names must be AutoAttack's."""
        bad = [a for a in self.attacks if a not in COMPONENTS]
        if bad:
            raise UserError(f"unknown AutoAttack component '{bad[0]}'; choose from {', '.join(COMPONENTS)}")
        if self.version == "custom" and not self.attacks:
            raise UserError("autoattack version=custom needs attacks=..., e.g. --set attacks=apgd-ce,apgd-t")
        if self.version != "custom" and self.attacks:
            raise UserError("autoattack attacks=... needs version=custom (the other versions fix their components)")
        for name in ("n_target_classes", "n_restarts", "n_queries", "eot_iter", "eot_samples"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise UserError(f"autoattack {name} must be >= 1")


@ATTACKS.register("autoattack", help="AutoAttack via pyautoattack: version standard (APGD-CE, APGD-T, FAB-T, Square), "
                  "plus, rand or custom; fixed seed; resumable", aliases=("aa",))
class AutoAttackAttack(AutoAttackBase):
    """The AutoAttack ensemble: components in sequence on still-robust points, worst case per sample."""

    Options = AutoAttackOptions

    def settings(self) -> dict[str, Any]:
        """Version, component list, seed and overrides."""
        o = self.options
        return {"version": o.version, "attacks": list(o.attacks) or None, "seed": o.seed,
                "n_target_classes": o.n_target_classes, "n_restarts": o.n_restarts, "n_queries": o.n_queries,
                "eot_iter": o.eot_iter}


@dataclass
class ComponentOptions:
    """One AutoAttack component with the ``standard`` version's settings; seed and target-class overrides."""

    seed: int = 0
    n_target_classes: int | None = None
    n_restarts: int | None = None


def _component(name: str, help_text: str) -> type[AutoAttackBase]:
    cls = type(f"AA_{name.replace('-', '_')}", (AutoAttackBase,), {
        "__doc__": f"AutoAttack's {name} run alone with the standard version's settings.",
        "component": name, "Options": ComponentOptions})
    ATTACKS.add(name, cls, help_text)
    return cls


APGDCE = _component("apgd-ce", "AutoAttack component APGD-CE alone (untargeted, 100 iterations, standard settings)")
APGDT = _component("apgd-t", "AutoAttack component APGD-T alone (targeted DLR, 9 targets, standard settings)")
FABT = _component("fab-t", "AutoAttack component FAB-T alone (targeted, 9 targets, standard settings)")
APGDDLR = _component("apgd-dlr", "AutoAttack component APGD-DLR alone (untargeted DLR loss)")
FAB = _component("fab", "AutoAttack component FAB alone (untargeted)")


@dataclass
class SquareOptions:
    """Square attack (Andriushchenko et al. 2020) via pyautoattack: query budget, initial square fraction, seed."""

    n_queries: int = 5000
    p_init: float = 0.8
    seed: int = 0

    def validate(self) -> None:
        """Budget >= 1 and 0 < p_init <= 1."""
        if self.n_queries < 1:
            raise UserError("square n_queries must be >= 1")
        if not 0 < self.p_init <= 1:
            raise UserError("square p_init must be in (0, 1]")


@ATTACKS.register("square", help="Square attack (score-based black-box, AutoAttack's implementation), "
                  "n_queries budget (default 5000)")
class SquareAttack(AutoAttackBase):
    """Random-search score-based attack on the margin loss; only model outputs are used."""

    kind = "black-box"
    component = "square"
    Options = SquareOptions
