"""``advbench.evaluate_tensors(model, x, y)``: attack your own ``nn.Module`` on your own tensors in one call, with no
run folder, no factory file and nothing left on disk (torchattacks-style).

It runs exactly :func:`advbench.api.evaluate` (same attacks, suites, per-sample results and hygiene checks) in a
temporary folder that is removed afterwards, and returns the result dictionary.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from advbench.api.evaluate import evaluate
from advbench.errors import UserError


def evaluate_tensors(model: Any, x: Any, y: Any, *, attack: str | None = None, suite: str | None = None,
                     eps: str | float = "8/255", norm: str = "linf", batch_size: int = 256, seed: int = 0,
                     device: str = "auto", attack_options: dict[str, Any] | None = None, hygiene: bool = True,
                     quiet: bool = True) -> dict[str, Any]:
    """Attack ``model`` (inputs in [0, 1], logits out) on images ``x`` (float in [0, 1] or uint8, N×C×H×W) with
    labels ``y``; returns the result (``clean``, ``results``, ``robust``, ``checks``), as ``advbench attack`` writes.

    ``attack``: one attack with ``attack_options`` (e.g. ``"pgd"``, ``{"steps": 50}``); ``suite``: a named suite
    (default ``pgd-lite``: FGSM, PGD-20, PGD-100, when no attack is given); ``eps``: a number or text (``8/255``,
    or ``4/255,8/255`` for several). Every image is attacked. Nothing is written: the run folder ``evaluate``
    needs is a temporary one.

    >>> res = evaluate_tensors(net, x, y, attack="pgd", attack_options={"steps": 20}, eps="8/255")
    >>> res["clean"]["accuracy"], res["robust"][0]["accuracy"]
    """
    n = len(y)
    if n < 1 or len(x) != n:
        raise UserError(f"evaluate_tensors needs as many images as labels (at least one); got {len(x)} and {n}")
    eps_text = eps if isinstance(eps, str) else repr(float(eps))
    with tempfile.TemporaryDirectory(prefix="advbench-tensors-") as tmp:
        result = evaluate(model, dataset=(x, y), suite=suite if suite or attack else "pgd-lite", attack=attack,
                          attack_options=attack_options, eps=eps_text, norm=norm, n_eval=n, batch_size=batch_size,
                          seed=seed, out=Path(tmp) / "result", name=type(model).__name__, device=device,
                          hygiene=hygiene, quiet=quiet, force=True)
    return result
