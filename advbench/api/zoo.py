"""RobustBench's model zoo: load a leaderboard model by name through the ``robustbench`` package (the optional
extra ``advbench[robustbench]``) and evaluate it like any other model.

``robustbench:NAME`` names a model of RobustBench's zoo for a dataset and threat model (``Linf``, ``L2``).
Weights come from ``MODEL_DIR/<dataset>/<threat>/NAME.pt`` (``MODEL_DIR`` is ``$ADVBENCH_ROBUSTBENCH_DIR`` or
``models``, robustbench's own default); a missing file is fetched by robustbench, and when that fails (no
network, a moved file) the error is one line that says where to put the file. The models take [0, 1] inputs and
normalise inside, as advbench expects.
"""

from __future__ import annotations

import difflib
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from advbench.errors import UserError

PREFIX = "robustbench:"
_THREATS = {"linf": "Linf", "l2": "L2"}


def is_zoo_spec(spec: Any) -> bool:
    """True for a ``robustbench:NAME`` model spec."""
    return isinstance(spec, str) and spec.startswith(PREFIX)


def model_dir() -> Path:
    """Where robustbench keeps weights: ``$ADVBENCH_ROBUSTBENCH_DIR``, else ``models`` (robustbench's default)."""
    return Path(os.environ.get("ADVBENCH_ROBUSTBENCH_DIR", "models"))


def _robustbench() -> Any:
    """The ``robustbench`` package, or one line saying how to install it.

    robustbench 1.1 imports AutoAttack under its git name ``autoattack``; PyPI's build of the same code (which
    advbench already uses, and robustbench itself requires) is ``pyautoattack``, so that name is lent to it."""
    try:
        import autoattack  # noqa: F401
    except ImportError:
        try:
            import pyautoattack
            import pyautoattack.state
        except ImportError:
            pass
        else:
            sys.modules.setdefault("autoattack", pyautoattack)
            sys.modules.setdefault("autoattack.state", pyautoattack.state)
    try:
        with warnings.catch_warnings():  # its import-time deprecation notices (timm, pkg_resources) are not ours
            warnings.simplefilter("ignore")
            import robustbench.utils
    except ImportError as err:
        raise UserError(f"robustbench models need the robustbench package ({err}); install it with "
                        "pip install 'advbench[robustbench]'") from None
    return robustbench


def zoo_names(dataset: str = "cifar10", threat_model: str = "Linf") -> list[str]:
    """The model names of RobustBench's zoo for ``dataset`` and ``threat_model``."""
    _robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    try:
        return list(model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat_model)])
    except (ValueError, KeyError):
        raise UserError(f"RobustBench has no {threat_model} models for dataset '{dataset}' (it has cifar10, cifar100 "
                        "and imagenet; threat models Linf, L2, corruptions)") from None


def load_zoo_model(spec: str, *, dataset: str = "cifar10", norm: str = "linf", directory: str | Path | None = None,
                   device: Any = "cpu") -> Any:
    """The RobustBench model ``robustbench:NAME`` (or ``NAME``) for ``dataset`` and threat ``norm``, in eval mode."""
    name = spec[len(PREFIX):] if is_zoo_spec(spec) else spec
    threat = _THREATS.get(norm.lower(), norm)
    names = zoo_names(dataset, threat)
    if name not in names:
        lower = {n.lower(): n for n in names}
        hint = difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=0.6)
        raise UserError(f"RobustBench has no {dataset} {threat} model '{name}'" + (
            f"; did you mean {lower[hint[0]]!r}?" if hint else f" ({len(names)} models; see robustbench.github.io)"))
    where = Path(directory) if directory is not None else model_dir()
    weights = where / dataset / threat / f"{name}.pt"
    from robustbench.utils import load_model

    try:
        model = load_model(model_name=name, model_dir=str(where), dataset=dataset, threat_model=threat)
    except Exception as err:  # noqa: BLE001 - any failure to fetch or read the weights: one line, then exit 2
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        state = "is not readable" if weights.is_file() else "is missing and could not be fetched"
        raise UserError(f"robustbench:{name}: the weights {weights} {state} ({type(err).__name__}: {first}); put "
                        f"the checkpoint there (or set ADVBENCH_ROBUSTBENCH_DIR) and run again") from None
    return model.to(device).eval()


def evaluate_zoo_model(spec: str, *, dataset: Any = "cifar10", norm: str = "linf", directory: str | Path | None = None,
                       out: str | Path | None = None, zoo_dataset: str | None = None, **options: Any) -> dict[str, Any]:
    """Load ``robustbench:NAME`` and evaluate it with :func:`advbench.api.evaluate` (same options and result).

    ``dataset``: a registered dataset name (its test split) or ``(x, y)`` tensors; ``zoo_dataset``: the zoo's
    dataset when ``dataset`` is tensors (default ``cifar10``); ``out``: default ``runs/robustbench-NAME``."""
    from advbench.api.evaluate import evaluate

    name = spec[len(PREFIX):] if is_zoo_spec(spec) else spec
    zoo = zoo_dataset or (dataset if isinstance(dataset, str) else "cifar10")
    model = load_zoo_model(name, dataset=zoo, norm=norm, directory=directory, device="cpu")
    return evaluate(model, dataset=dataset, norm=norm, name=f"robustbench:{name}",
                    out=out or Path("runs") / f"robustbench-{name}", **options)
