"""The certification loop: a :class:`CertifyJob` (randomized smoothing, Finlay's L-bound or ω-bound) on the first
``n_eval`` test images, written atomically to ``RUN/certify/<name>.json`` (docs/run-format.md).

Randomized smoothing is slow (n noisy forwards per image), so it is resumable: every few seconds the per-image
certificates so far are written to ``certify/.<name>.partial.json``, and a rerun of the same job (same
fingerprint) continues from there. Each image's noise comes from a generator seeded by (seed, image index), so a
resumed certification gives the same certificates as an uninterrupted one. The bounds take one pass over the
images plus the extreme-value sampling and are not resumed.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from advbench import runs
from advbench.certify import (
    ABSTAIN,
    BoundOptions,
    SmoothingOptions,
    certified_accuracy,
    certify,
    lbound_distances,
    lipschitz_estimate,
    loss_and_dual_grad,
    monotone_envelope,
    omega_certified,
    omega_distances,
    omega_estimates,
)
from advbench.config import json_safe
from advbench.core.passes import frozen
from advbench.core.progress import NullProgress
from advbench.core.seeding import derived_seed, make_generator
from advbench.core.signals import Interrupted, StopFlag
from advbench.engine.evaluate import to_model_input
from advbench.engine.job import as_eval_data
from advbench.threat import parse_eps

METHODS = ("smoothing", "lbound", "omega")
#: Finlay and Oberman's radii: Table 5 (ℓ2, smoothing) and Table 1 (ℓ∞, ω-bound error at 2/255 and 8/255)
DEFAULT_RADII = {"l2": ("0.25", "0.5", "0.75", "1.0", "1.25", "1.5", "1.75", "2.0"), "linf": ("2/255", "8/255")}
#: the ε grid of the ω-bound distance (the radii are added to it): ℓ2 multiples of 0.05 up to 2; ℓ∞ k/255 up to 16
DEFAULT_GRID = {"l2": tuple(f"{k * 0.05:.2f}" for k in range(1, 41)), "linf": tuple(f"{k}/255" for k in range(1, 17))}
#: seconds between two writes of the smoothing partial file
SAVE_EVERY_S = 10.0


@dataclass
class CertifyJob:
    """What to certify: ``method`` in ``norm`` at ``radii`` (``(value, text)`` pairs) on the first ``n_eval``
    images; ``smoothing`` or ``bound`` options; ``grid`` the ω-bound's ε grid; ``batch_size`` images per pass of
    the bounds' gradient statistics; ``source`` what model (run, checkpoint, epoch) and ``identity`` the digests
    of its weights and the images (both in the fingerprint)."""

    method: str
    norm: str = "l2"
    radii: list[tuple[float, str]] = field(default_factory=list)
    n_eval: int = 1000
    seed: int = 0
    batch_size: int = 256
    smoothing: SmoothingOptions | None = None
    bound: BoundOptions | None = None
    grid: list[tuple[float, str]] = field(default_factory=list)
    source: dict[str, Any] | None = None
    identity: dict[str, Any] | None = None

    @property
    def default_name(self) -> str:
        """``smoothing-sigma0.25``, ``lbound-l2``, ``omega-linf``."""
        if self.method == "smoothing":
            return f"smoothing-sigma{self.smoothing.sigma:g}" if self.smoothing else "smoothing"
        return f"{self.method}-{self.norm}"

    @property
    def label(self) -> str:
        """The report's column label: ``Smoothing σ=0.25``, ``L-bound``, ``ω-bound``."""
        if self.method == "smoothing":
            return f"Smoothing σ={self.smoothing.sigma:g}" if self.smoothing else "Smoothing"
        return {"lbound": "L-bound", "omega": "ω-bound"}[self.method]

    def options(self) -> dict[str, Any]:
        """The method's settings as recorded (and fingerprinted)."""
        out: dict[str, Any] = {}
        if self.method == "smoothing" and self.smoothing is not None:
            out = asdict(self.smoothing)
        elif self.bound is not None:
            out = {**asdict(self.bound), "batch_size": self.batch_size, "sampling": "images of the evaluated "
                   "subset, with replacement" + ("; v uniform in the eps-ball, x + v not clipped"
                                                 if self.method == "omega" else "")}
            if self.method == "omega":
                out["grid"] = [t for _, t in self.grid]
        return out

    def fingerprint(self) -> str:
        """Hash of everything that decides the per-image results (resume and reuse match only the same job)."""
        blob = json.dumps(json_safe({"method": self.method, "norm": self.norm, "radii": [t for _, t in self.radii],
                                     "n": self.n_eval, "seed": self.seed, "options": self.options(),
                                     "source": self.source, "identity": self.identity}), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    with frozen(model, "eval"), torch.no_grad():
        return int(model(x[:1]).shape[1])


def _clean_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> list[bool]:
    out: list[bool] = []
    with frozen(model, "eval"), torch.no_grad():
        for i in range(0, x.shape[0], batch):
            out += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).cpu().tolist()
    return out


def certify_images(model: nn.Module, split: Any, job: CertifyJob, out_file: str | Path, *, device: torch.device,
                   progress: NullProgress | None = None, stop: StopFlag | None = None) -> dict[str, Any]:
    """Run ``job`` on ``model`` and the first ``job.n_eval`` images of ``split`` (anything with ``.x``/``.y`` or an
    ``(x, y)`` pair; uint8 or [0, 1] floats); write the result to ``out_file`` atomically and return it."""
    out_file = Path(out_file)
    data = as_eval_data(split)
    n = min(job.n_eval, len(data))
    model = model.to(device)
    x, y = to_model_input(data.x[:n], device), data.y[:n].to(device)
    started = time.monotonic()
    clean = _clean_correct(model, x, y, job.batch_size)
    if job.method == "smoothing":
        block = _smoothing(model, x, y, job, out_file, device, progress or NullProgress(), stop or StopFlag())
    elif job.method == "lbound":
        block = _lbound(model, x, y, job)
    else:
        block = _omega(model, x, y, job, device)
    resumed = block.pop("resumed_seconds", 0.0)
    result = {
        "format": "advbench-certify-v1",
        "name": out_file.stem,
        "method": job.method,
        "label": job.label,
        "norm": job.norm,
        "source": job.source,
        "identity": job.identity,
        "n_eval": n,
        "subset": "first-n",
        "seed": job.seed,
        "options": job.options(),
        "clean": {"accuracy": sum(clean) / max(1, n), "n": n, "correct": [int(c) for c in clean]},
        **block,
        "seconds": time.monotonic() - started + resumed,
        "fingerprint": job.fingerprint(),
        "versions": runs.package_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    runs.write_json(out_file, result)
    partial = _partial_path(out_file)
    if partial.exists():
        partial.unlink()
    return result


def _certified_rows(job: CertifyJob, accuracies: list[float], n: int) -> list[dict[str, Any]]:
    return [{"radius": r, "eps": t, "accuracy": a, "n": n} for (r, t), a in zip(job.radii, accuracies, strict=True)]


def _partial_path(out_file: Path) -> Path:
    return out_file.with_name(f".{out_file.stem}.partial.json")


def _smoothing(model: nn.Module, x: torch.Tensor, y: torch.Tensor, job: CertifyJob, out_file: Path,
               device: torch.device, progress: NullProgress, stop: StopFlag) -> dict[str, Any]:
    """CERTIFY on every image, resumable from the partial file."""
    assert job.smoothing is not None
    opts, n = job.smoothing, x.shape[0]
    partial = _partial_path(out_file)
    keys = ("prediction", "radius", "p_lower", "count")
    done: dict[str, list[Any]] = {k: [] for k in keys}
    spent = 0.0
    if partial.is_file():
        try:
            state = runs.read_json(partial)
        except runs.CorruptFile:
            state = None
        try:
            if isinstance(state, dict) and state.get("fingerprint") == job.fingerprint():
                done = {k: list(state["per_sample"][k])[:n] for k in keys}
                spent = float(state.get("seconds", 0.0))
        except (KeyError, TypeError, ValueError):  # a malformed partial file holds nothing to resume
            done, spent = {k: [] for k in keys}, 0.0
    classes = _num_classes(model, x)
    began, last_save = time.monotonic(), time.monotonic()

    def save() -> None:
        runs.write_json(partial, {"fingerprint": job.fingerprint(), "per_sample": done,
                                  "seconds": spent + time.monotonic() - began})

    task = progress.task(f"certify smoothing σ={opts.sigma:g}", total=n)
    progress.advance(task, len(done["prediction"]))
    for i in range(len(done["prediction"]), n):
        if stop.requested:
            save()
            raise Interrupted(f"certification stopped after {i} of {n} images ({stop.reason}); rerun the same "
                              "command to continue")
        cert = certify(model, x[i], opts, classes, make_generator(device, job.seed, "smoothing", i))
        done["prediction"].append(cert.prediction)
        done["radius"].append(cert.radius)
        done["p_lower"].append(cert.p_lower)
        done["count"].append(cert.count)
        progress.advance(task)
        if time.monotonic() - last_save > SAVE_EVERY_S:
            save()
            last_save = time.monotonic()
    progress.done(task)
    labels = y.cpu().tolist()
    correct = [int(p == t) for p, t in zip(done["prediction"], labels, strict=True)]
    acc = certified_accuracy(done["prediction"], done["radius"], labels, [r for r, _ in job.radii])
    abstained = sum(1 for p in done["prediction"] if p == ABSTAIN)
    return {"certified": _certified_rows(job, acc, n),
            "summary": {"abstained": abstained, "abstain_rate": abstained / max(1, n),
                        "smoothed_accuracy": sum(correct) / max(1, n),
                        "mean_radius_correct": float(np.mean([r for r, c in zip(done["radius"], correct, strict=True)
                                                              if c])) if any(correct) else 0.0},
            "per_sample": {**done, "correct": correct}, "resumed_seconds": spent}


def _lbound(model: nn.Module, x: torch.Tensor, y: torch.Tensor, job: CertifyJob) -> dict[str, Any]:
    assert job.bound is not None
    st = loss_and_dual_grad(model, x, y, job.norm, job.batch_size)
    fit = lipschitz_estimate(st.dual_grad, job.bound, derived_seed(job.seed, "lbound"))
    dist = lbound_distances(st.loss, fit.estimate)
    acc = [float(np.mean((st.loss < 0) & (dist >= r))) for r, _ in job.radii]
    return {"certified": _certified_rows(job, acc, x.shape[0]),
            "summary": {"mean_distance": _finite(float(np.mean(dist))), "lipschitz": fit.estimate,
                        "gev": fit.to_dict(), "grad_norm_mean": float(np.mean(st.dual_grad)),
                        "grad_norm_max": float(np.max(st.dual_grad))},
            "per_sample": {"loss": st.loss.tolist(), "dual_grad_norm": st.dual_grad.tolist(),
                           "distance": [_finite(d) for d in dist]}}


def _omega(model: nn.Module, x: torch.Tensor, y: torch.Tensor, job: CertifyJob, device: torch.device) -> dict[str, Any]:
    assert job.bound is not None
    st = loss_and_dual_grad(model, x, y, job.norm, job.batch_size)
    grid = sorted({v: t for v, t in [*job.grid, *job.radii]}.items())
    values = [v for v, _ in grid]
    fits = omega_estimates(model, x, y, values, job.norm, job.bound, derived_seed(job.seed, "omega"),
                           make_generator(device, job.seed, "omega"))
    omegas = dict(zip(values, monotone_envelope(values, [f.estimate for f in fits]), strict=True))
    acc = [float(np.mean(omega_certified(st.loss, st.dual_grad, omegas[r], r))) for r, _ in job.radii]
    dist = omega_distances(st.loss, st.dual_grad, values, [omegas[v] for v in values])
    return {"certified": _certified_rows(job, acc, x.shape[0]),
            "summary": {"mean_distance": float(np.mean(dist)),
                        "omega": [{"eps": t, "eps_float": v, "omega": omegas[v], "gev": f.to_dict()}
                                  for (v, t), f in zip(grid, fits, strict=True)],
                        "grad_norm_mean": float(np.mean(st.dual_grad)), "grad_norm_max": float(np.max(st.dual_grad))},
            "per_sample": {"loss": st.loss.tolist(), "dual_grad_norm": st.dual_grad.tolist(),
                           "distance": dist.tolist()}}


def parse_radii(text: str | None, norm: str, default: tuple[str, ...]) -> list[tuple[float, str]]:
    """``0.25,0.5`` or ``2/255,8/255`` (each a radius >= 0) as (value, text) pairs, sorted; ``default`` if None."""
    from advbench.errors import UserError

    parts = list(default) if text is None else [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise UserError("empty radius list; write e.g. --radii 0.25,0.5,1.0")
    out = {}
    for p in parts:
        value, literal = parse_eps(p)
        out.setdefault(value, literal)
    return sorted(out.items())
