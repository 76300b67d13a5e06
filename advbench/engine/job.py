"""What an evaluation is: the images it runs on (:func:`as_eval_data`), the job (:class:`EvalJob`: a suite at
one or more threats) and the digests of what is evaluated (:func:`identity_of`). The job's
:meth:`~EvalJob.fingerprint` keys resume files and stored results, so a result is reused only for the
same job on the same model and data."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from advbench.attacks import ATTACKS, Suite, SuiteEntry
from advbench.attacks.suites import DEFAULT_EPS
from advbench.config import json_safe
from advbench.core.digest import code_identity, data_digest, weights_digest
from advbench.data import TensorSplit, is_lazy
from advbench.threat import ThreatModel


def as_eval_data(data: Any) -> TensorSplit:
    """Evaluation images (uint8 in 0..255, or float in [0, 1]) and int64 labels from a split (anything with
    ``.x`` and ``.y``) or an ``(x, y)`` pair of tensors."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        x, y = data.x, data.y
    x, y = (x if is_lazy(x) else torch.as_tensor(x)), torch.as_tensor(y).long()  # lazy files: decoded when sliced
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x.shape[0]} images but {y.shape[0]} labels")
    return TensorSplit(x, y)


@dataclass
class EvalJob:
    """What to evaluate: a suite at one or more threats on the first ``n_eval`` images.

    ``available`` names the optional resources the evaluation provides (``source_model`` for transfer
    attacks); entries whose attack needs a missing one are skipped and listed in the result.
    ``hygiene`` runs the model probe (large-eps PGD, zero gradients, determinism) for the checks.
    """

    suite: Suite
    threats: list[ThreatModel]
    n_eval: int
    batch_size: int = 256
    seed: int = 0
    source: dict[str, Any] | None = None  # what model was attacked (run, checkpoint, epoch)
    transfer_source: dict[str, Any] | None = None  # the model transfer attacks are crafted on
    hygiene: bool = True
    available: frozenset[str] = frozenset()
    #: digests of what is evaluated (:func:`identity_of`): the model's weights and classes, the images and
    #: labels, the transfer source's weights; part of the fingerprint, so a stored result is reused only for
    #: the same model on the same data
    identity: dict[str, Any] | None = None
    #: ``--adapt``: probe first and add the attack suited to each masking kind found (:mod:`advbench.engine.adapt`)
    adapt: bool = False
    #: the entries ``adapt`` added (a function of the probe, so of the model and data: not in the fingerprint)
    adaptive: tuple[SuiteEntry, ...] = ()

    def entry_threat(self, entry: SuiteEntry, threat: ThreatModel) -> ThreatModel:
        """The entry's own threat: its fixed norm/eps, else the evaluation's (a foreign norm gets its default eps)."""
        norm = entry.norm or threat.norm
        eps = entry.eps or (threat.eps_text if norm == threat.norm else DEFAULT_EPS[norm])
        return ThreatModel.parse(eps, norm)

    def all_entries(self) -> list[tuple[str, SuiteEntry, ThreatModel]]:
        """(key, suite entry, threat) for every attack at every eps, runnable or not (no duplicates)."""
        multi = len(self.threats) > 1
        out, seen = [], set()
        for threat in self.threats:
            for e in self.suite.entries + self.adaptive:
                t = self.entry_threat(e, threat)
                key = f"{e.label}@{t.eps_text}" if multi else e.label
                if key not in seen:
                    seen.add(key)
                    out.append((key, e, t))
        return out

    def entries(self) -> list[tuple[str, SuiteEntry, ThreatModel]]:
        """The runnable entries (their attack's needs are available)."""
        return [(k, e, t) for k, e, t in self.all_entries() if not self._missing(e)]

    def skipped(self) -> list[dict[str, Any]]:
        """Entries left out because a resource is missing, with the reason."""
        return [{"key": k, "label": e.label, "attack": e.attack, "reason": f"needs {', '.join(self._missing(e))} "
                 "(pass --source RUN)"} for k, e, _ in self.all_entries() if self._missing(e)]

    def _missing(self, entry: SuiteEntry) -> list[str]:
        return [n for n in ATTACKS.get(entry.attack).needs if n not in self.available]

    def fingerprint(self) -> str:
        """Hash of everything that decides the per-sample results (resume only matches the same job)."""
        blob = json.dumps(json_safe({
            "suite": self.suite.name,
            "entries": [(e.label, e.attack, e.options, e.norm, e.eps, e.subset) for e in self.suite.entries],
            "threats": [t.to_dict() for t in self.threats], "n": self.n_eval, "bs": self.batch_size,
            "seed": self.seed, "source": self.source, "transfer_source": self.transfer_source,
            "hygiene": self.hygiene, "available": sorted(self.available), "identity": self.identity,
            **({"adapt": True} if self.adapt else {})}),
            sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def identity_of(model: nn.Module, data: Any, n_eval: int, source_model: nn.Module | None = None) -> dict[str, Any]:
    """What decides a result besides the job's settings: the model's weights and code, the first ``n_eval``
    images and labels of ``data``, and the transfer source model's weights (see :mod:`advbench.core.digest`)."""
    d = as_eval_data(data)
    n = min(n_eval, len(d))
    out: dict[str, Any] = {"weights": weights_digest(model), "code": code_identity(model),
                           "data": data_digest(d.x[:n], d.y[:n])}
    if source_model is not None:
        out["source_weights"] = weights_digest(source_model)
        out["source_code"] = code_identity(source_model)
    return out
