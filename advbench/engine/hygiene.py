"""Evaluation hygiene: checks computed and stored with every attack result (the ``checks`` block).

Each check says ``pass``, ``warn`` or ``fail`` and carries the numbers behind it. Checks that do not
apply to a result (e.g. step monotonicity with a single PGD) are left out. The probe measurements
(large-eps PGD, zero input gradients, eval-mode determinism, input range) come from
:func:`probe_model`, run on the first evaluated images.

Tolerances are in samples so that small evaluations are not flagged for one random flip: an increase
of at most max(1 sample, 0.5% of n) passes, up to max(3 samples, 2% of n) warns, more fails.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advbench.attacks.aa_checks import counts as aa_flag_counts
from advbench.attacks.losses import margin
from advbench.attacks.pgd import input_grad, pgd_perturb
from advbench.core.passes import frozen
from advbench.engine.adapt import probe_extras
from advbench.threat import ThreatModel

STATUSES = ("pass", "warn", "fail")
#: the large-eps probe: Linf PGD over the whole [0, 1] box must fool (almost) everything
LARGE_EPS = 1.0
LARGE_EPS_STEPS = 20
LARGE_EPS_STEP = 0.1
PROBE_N = 256


@dataclass
class Check:
    """One hygiene check: name, pass/warn/fail, a one-line message and the numbers behind it."""

    name: str
    status: str
    message: str
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


def worst(statuses: list[str]) -> str:
    """The most severe of ``statuses`` (pass < warn < fail); ``pass`` for none."""
    return max(statuses, key=STATUSES.index, default="pass")


def _tolerances(n: int) -> tuple[float, float]:
    """(pass, warn) tolerances as accuracy fractions for n samples."""
    n = max(1, n)
    return max(1.0 / n, 0.005), max(3.0 / n, 0.02)


def _grade(excess: float, n: int) -> str:
    ok, warn_tol = _tolerances(n)
    if excess <= ok + 1e-12:
        return "pass"
    return "warn" if excess <= warn_tol + 1e-12 else "fail"


def model_digest(model: nn.Module) -> str:
    """Hash of every parameter and buffer (values) and every module's training flag."""
    h = hashlib.sha256()
    for name, t in list(model.state_dict().items()):
        h.update(name.encode())
        if isinstance(t, torch.Tensor) and t.numel():
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps([m.training for m in model.modules()]).encode())
    return h.hexdigest()[:16]


def _zero_grads(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, loss: str) -> tuple[int, float]:
    """(images with an all-zero input gradient, summed fraction of non-zero entries) of ``ce`` or ``margin``."""
    xg = xb.clone().requires_grad_(True)
    logits = model(xg)
    out = F.cross_entropy(logits, yb, reduction="sum") if loss == "ce" else margin(logits, yb).sum()
    flat = input_grad(out, xg).flatten(1)
    return int((flat.abs().sum(1) == 0).sum()), float((flat != 0).float().mean(1).sum())


def probe_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> dict[str, Any]:
    """Measurements behind the model-level checks, on images ``x`` (eval mode, weights frozen).

    - ``large_eps_accuracy``: accuracy after Linf PGD-20 (step 0.1, zero start) at eps = 1 (the whole box);
    - ``zero_grad_fraction``: fraction of images whose CE input gradient is exactly zero;
      ``nonzero_grad_entries``: mean fraction of non-zero gradient entries (SOAR E.11);
      ``margin_zero_grad_fraction``: the same for the logit margin (zero too: non-differentiable; not: saturated);
    - ``nondeterminism``: max |f(x) - f(x)| over two eval-mode passes, relative to max |f(x)|;
    - ``input_min`` / ``input_max``: range of the clean inputs; ``num_classes``: the model's outputs;
    - ``autoattack_flags``: AutoAttack's own checks on these images; ``gradient_breakers``: submodules that
      break gradients (looked for only when some gradients are zero).
    """
    threat = ThreatModel("linf", LARGE_EPS, "1")
    n = x.shape[0]
    zero, m_zero, nonzero, large_correct, clean_correct, classes = 0, 0, 0.0, 0, 0, 0
    nondet = 0.0
    with frozen(model, "eval"):
        for i in range(0, n, batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            with torch.no_grad():
                z1, z2 = model(xb), model(xb)
                nondet = max(nondet, float((z1 - z2).abs().max() / (z1.abs().max() + 1e-12)))
                clean_correct += int((z1.argmax(1) == yb).sum())
                classes = int(z1.shape[1])
            z, nz = _zero_grads(model, xb, yb, "ce")
            zero, nonzero = zero + z, nonzero + nz
            m_zero += _zero_grads(model, xb, yb, "margin")[0]
            x_adv = pgd_perturb(model, xb, yb, threat, steps=LARGE_EPS_STEPS, alpha=LARGE_EPS_STEP, init="zero")
            with torch.no_grad():
                large_correct += int((model(x_adv).argmax(1) == yb).sum())
    measured = {
        "n": n,
        "clean_accuracy": clean_correct / max(1, n),
        "large_eps": {"norm": "linf", "eps": LARGE_EPS, "steps": LARGE_EPS_STEPS, "step_size": LARGE_EPS_STEP,
                      "init": "zero"},
        "large_eps_accuracy": large_correct / max(1, n),
        "zero_grad_fraction": zero / max(1, n),
        "nonzero_grad_entries": nonzero / max(1, n),
        "margin_zero_grad_fraction": m_zero / max(1, n),
        "nondeterminism": nondet,
        "num_classes": classes,
        "input_min": float(x.min()) if n else 0.0,
        "input_max": float(x.max()) if n else 0.0,
    }
    if n:
        measured.update(probe_extras(model, x[:batch_size], y[:batch_size], measured))
    return measured


def _budget(r: dict[str, Any]) -> tuple[str, str]:
    return r["norm"], r["eps"]


def check_robust_le_clean(result: dict[str, Any]) -> Check:
    """Every attack's accuracy <= clean accuracy (same images); the worst case <= clean by construction."""
    clean = result["clean"]["correct"]
    rows, worst_excess, fixed = [], 0.0, 0
    for r in result["results"]:
        m = r["n"]
        c = sum(clean[:m]) / max(1, m)
        repaired = sum(1 for a, b in zip(r["correct"], clean[:m], strict=True) if a and not b)
        fixed += repaired
        rows.append({"key": r["key"], "accuracy": r["accuracy"], "clean_accuracy": c, "repaired": repaired})
        worst_excess = max(worst_excess, r["accuracy"] - c)
    robust_excess = max([rb["accuracy"] - result["clean"]["accuracy"] for rb in result["robust"]] + [0.0])
    if robust_excess > 1e-12:
        status, msg = "fail", "worst-case accuracy exceeds clean accuracy"
    elif worst_excess > 1e-12:
        status = "warn"
        msg = f"an attack left {fixed} clean-misclassified image(s) correctly classified (accuracy above clean)"
    else:
        status, msg = "pass", "every attack's accuracy is at most the clean accuracy"
    return Check("robust_le_clean", status, msg, {"max_excess": worst_excess, "repaired": fixed, "attacks": rows})


def _step_family(r: dict[str, Any]) -> tuple[str, ...] | None:
    opts = r.get("options") or {}
    if "steps" not in opts:
        return None
    rest = {k: v for k, v in opts.items() if k not in ("steps", "restarts")}
    return (r["attack"], r["norm"], r["eps"], json.dumps(rest, sort_keys=True, default=str))


def check_monotone_steps(result: dict[str, Any]) -> Check | None:
    """Accuracy never increases with more steps or restarts (same attack, loss, budget)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in result["results"]:
        fam = _step_family(r)
        if fam is not None:
            groups[fam].append(r)
    pairs = []
    for members in groups.values():
        for a in members:
            for b in members:
                sa, sb = a["options"]["steps"], b["options"]["steps"]
                ra, rb = a["options"].get("restarts", 1), b["options"].get("restarts", 1)
                if a is not b and sa >= sb and ra >= rb and (sa, ra) != (sb, rb):
                    pairs.append({"stronger": a["key"], "weaker": b["key"], "stronger_accuracy": a["accuracy"],
                                  "weaker_accuracy": b["accuracy"], "increase": a["accuracy"] - b["accuracy"],
                                  "n": min(a["n"], b["n"])})
    return _worst_increase("monotone_steps", pairs, "accuracy is non-increasing in steps and restarts",
                           lambda b: f"{b['stronger']} is {100 * b['increase']:.2f} points less effective than "
                                     f"{b['weaker']}", lambda b: {"pairs": pairs, "tolerance": _tolerances(b["n"])})


def _worst_increase(name: str, pairs: list[dict[str, Any]], ok: str, bad_message: Any, extra: Any) -> Check | None:
    """The check of a "should not increase" family: graded on its largest increase (None when nothing compares)."""
    if not pairs:
        return None
    bad = max(pairs, key=lambda p: p["increase"])
    status = _grade(bad["increase"], bad["n"])
    return Check(name, status, ok if status == "pass" else bad_message(bad), {"worst": bad, **extra(bad)})


def check_monotone_eps(result: dict[str, Any]) -> Check | None:
    """Accuracy never increases with eps (same attack label, several budgets of one norm)."""
    by_label: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in result["results"]:
        by_label[(r["label"], r["norm"])].append(r)
    for rb in result["robust"]:
        by_label[("Worst case", rb["norm"])].append({**rb, "key": f"Worst case@{rb['eps']}"})
    pairs = []
    for members in by_label.values():
        srt = sorted(members, key=lambda r: r["eps_float"])
        for lo, hi in zip(srt, srt[1:], strict=False):
            if hi["eps_float"] > lo["eps_float"]:
                pairs.append({"larger": hi["key"], "smaller": lo["key"], "larger_accuracy": hi["accuracy"],
                              "smaller_accuracy": lo["accuracy"], "increase": hi["accuracy"] - lo["accuracy"],
                              "n": min(hi["n"], lo["n"])})
    for r in result["results"]:
        curve = (r.get("summary") or {}).get("curve")
        if curve:
            for lo, hi in zip(curve, curve[1:], strict=False):
                pairs.append({"larger": f"{r['key']} curve @{hi['eps']:.4g}", "smaller": f"@{lo['eps']:.4g}",
                              "larger_accuracy": hi["accuracy"], "smaller_accuracy": lo["accuracy"],
                              "increase": hi["accuracy"] - lo["accuracy"], "n": r["n"]})
    return _worst_increase("monotone_eps", pairs, "accuracy is non-increasing in eps",
                           lambda b: f"{b['larger']} is {100 * b['increase']:.2f} points above {b['smaller']}",
                           lambda b: {"pairs": len(pairs)})


def check_large_eps(probe: dict[str, Any]) -> Check:
    """Linf PGD over the whole [0, 1] box must bring accuracy to (near) zero; else gradients mislead PGD."""
    n, acc = probe["n"], probe["large_eps_accuracy"]
    count = round(acc * n)
    if count <= max(1, 0.02 * n):
        status = "pass"
    elif count <= 0.10 * n:
        status = "warn"
    else:
        status = "fail"
    msg = f"accuracy {100 * acc:.1f}% under Linf PGD-{LARGE_EPS_STEPS} at eps=1 on {n} images" + \
        ("" if status == "pass" else " (should be ~0%: gradient masking?)")
    return Check("large_eps", status, msg, {"accuracy": acc, "n": n, **probe["large_eps"],
                                            "thresholds": {"pass": "<= max(1 image, 2%)", "warn": "<= 10%"}})


def check_zero_gradients(probe: dict[str, Any]) -> Check:
    """Fraction of images whose CE input gradient is exactly zero (saturated or quantised models)."""
    frac = probe["zero_grad_fraction"]
    status = "pass" if frac <= 0.01 else ("warn" if frac <= 0.10 else "fail")
    msg = f"{100 * frac:.1f}% of {probe['n']} images have an all-zero input gradient; " \
          f"{100 * probe['nonzero_grad_entries']:.1f}% of gradient entries are non-zero"
    return Check("zero_gradients", status, msg, {"zero_grad_fraction": frac,
                                                 "nonzero_grad_entries": probe["nonzero_grad_entries"],
                                                 "n": probe["n"], "thresholds": {"pass": "<= 1%", "warn": "<= 10%"}})


def check_blackbox_vs_whitebox(result: dict[str, Any]) -> Check | None:
    """Black-box attacks (Square, SimBA, RayS, transfer) must not beat the best white-box attack."""
    by_budget: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in result["results"]:
        by_budget[_budget(r)][r.get("kind", "white-box")].append(r)
    rows = []
    for (norm, eps), kinds in by_budget.items():
        if not kinds.get("black-box") or not kinds.get("white-box"):
            continue
        members = kinds["black-box"] + kinds["white-box"]
        m = min(r["n"] for r in members)
        wb = [all(r["correct"][i] for r in kinds["white-box"]) for i in range(m)]
        bb = [all(r["correct"][i] for r in kinds["black-box"]) for i in range(m)]
        wb_best = min(sum(r["correct"][:m]) for r in kinds["white-box"]) / max(1, m)
        bb_best_r = min(kinds["black-box"], key=lambda r: sum(r["correct"][:m]))
        bb_best = sum(bb_best_r["correct"][:m]) / max(1, m)
        only_bb = sum(1 for w, b in zip(wb, bb, strict=True) if w and not b)
        rows.append({"norm": norm, "eps": eps, "n": m, "best_white_box_accuracy": wb_best,
                     "best_black_box": bb_best_r["key"], "best_black_box_accuracy": bb_best,
                     "fooled_only_by_black_box": only_bb, "excess": wb_best - bb_best})
    if not rows:
        return None
    bad = max(rows, key=lambda r: r["excess"])
    status = _grade(bad["excess"], bad["n"])
    msg = "black-box attacks are not stronger than white-box attacks" if status == "pass" else \
        f"{bad['best_black_box']} beats every white-box attack by {100 * bad['excess']:.2f} points " \
        f"({bad['fooled_only_by_black_box']} images fooled only by black-box attacks): gradient masking?"
    return Check("blackbox_vs_whitebox", status, msg, {"worst": bad, "budgets": rows})


def check_autoattack_flags(result: dict[str, Any], probe: dict[str, Any] | None = None) -> Check | None:
    """AutoAttack's own sanity flags: its checks run on the probe images (every suite) and those captured from
    AutoAttack runs, and Square lowering the robust accuracy after the gradient attacks by more than 0.2 points
    (AutoAttack's ``check_square_sr``). Flags about settings advbench adjusts (target classes) and zero gradients
    of at most 1% of the images are notes."""
    aa = [r for r in result["results"] if (r.get("summary") or {}).get("components")]
    probe_flags = list((probe or {}).get("autoattack_flags") or [])
    if not aa and probe is None:
        return None
    flags = [f"probe: {f['message']}" for f in probe_flags if aa_flag_counts(f)]
    notes = [f"probe: {f['message']}" for f in probe_flags if not aa_flag_counts(f)]
    square_only = []
    for r in aa:
        s = r["summary"]
        flags += [f"{r['key']}: {f['message']}" for f in s.get("flags", [])]
        if s.get("square_only") is not None:
            square_only.append({"key": r["key"], "square_only": s["square_only"]})
            if s["square_only"] > 0.002:
                flags.append(f"{r['key']}: Square lowered the robust accuracy by {100 * s['square_only']:.2f} points "
                             "after the gradient-based components (unreliable evaluation?)")
    status = "warn" if flags else "pass"
    noted = f" (notes: {'; '.join(notes)})" if notes else ""
    msg = "; ".join(flags) if flags else f"no AutoAttack sanity flags{noted}"
    return Check("autoattack_flags", status, msg, {"flags": flags, "notes": notes, "probe_flags": probe_flags,
                                                   "square_only": square_only,
                                                   "mismatch": sum(r["summary"].get("verdict_mismatch", 0)
                                                                   for r in aa)})


def check_eval_mode(probe: dict[str, Any], digest_before: str | None, digest_after: str | None) -> Check:
    """Attacks leave parameters, buffers (BN statistics) and modes unchanged; eval-mode outputs are deterministic."""
    changed = digest_before is not None and digest_after is not None and digest_before != digest_after
    nondet = probe["nondeterminism"]
    if changed:
        status, msg = "fail", "the model's parameters, buffers or modes changed during the evaluation"
    elif nondet > 1e-5:
        status = "warn"
        msg = f"eval-mode outputs differ between two passes (relative {nondet:.2g}): a randomized model; " \
              "use autoattack version=rand / EOT"
    else:
        status, msg = "pass", "model unchanged by the attacks; eval-mode outputs deterministic"
    return Check("eval_mode", status, msg, {"state_changed": changed, "nondeterminism": nondet,
                                            "digest_before": digest_before, "digest_after": digest_after})


def check_input_range(result: dict[str, Any], probe: dict[str, Any] | None) -> Check:
    """Clean inputs lie in [0, 1]; every adversarial image lies in [0, 1] and in its eps ball."""
    problems = []
    if probe is not None and (probe["input_min"] < 0 or probe["input_max"] > 1):
        problems.append(f"clean inputs span [{probe['input_min']:.3g}, {probe['input_max']:.3g}], not [0, 1] "
                        "(normalise inside the model)")
    rows = []
    for r in result["results"]:
        lo, hi = r.get("x_range", [0.0, 1.0])
        size = r.get("max_perturbation", 0.0)
        tol = 1e-6 if r["norm"] == "l2" else 1e-7
        ok = lo >= 0 and hi <= 1 and size <= r["eps_float"] + tol
        rows.append({"key": r["key"], "x_min": lo, "x_max": hi, "max_perturbation": size, "eps": r["eps_float"],
                     "ok": ok})
        if not ok:
            problems.append(f"{r['key']} produced images outside [0, 1] or its eps ball")
    status = "fail" if problems else "pass"
    msg = "; ".join(problems) if problems else "inputs in [0, 1]; adversarial images in [0, 1] and in their eps ball"
    values = {"attacks": rows}
    if probe is not None:
        values.update({"input_min": probe["input_min"], "input_max": probe["input_max"]})
    return Check("input_range", status, msg, values)


def run_checks(result: dict[str, Any], probe: dict[str, Any] | None, digest_before: str | None = None,
               digest_after: str | None = None, extra: list[Check | None] | None = None) -> dict[str, Any]:
    """All applicable checks for an assembled result (and the ``extra`` ones: the checklist's); the ``checks`` block."""
    checks: list[Check | None] = [check_robust_le_clean(result), check_monotone_steps(result),
                                  check_monotone_eps(result)]
    if probe is not None:
        checks += [check_large_eps(probe), check_zero_gradients(probe)]
    checks += [check_blackbox_vs_whitebox(result), check_autoattack_flags(result, probe)]
    if probe is not None:
        checks.append(check_eval_mode(probe, digest_before, digest_after))
    checks.append(check_input_range(result, probe))
    done = [c for c in checks + list(extra or []) if c is not None]
    status = worst([c.status for c in done])
    flagged = [c.name for c in done if c.status != "pass"]
    return {"status": status, "flagged": flagged, "probe": probe, "checks": [c.to_dict() for c in done]}
