"""The Python API, one module per command. The CLI calls exactly these functions, so notebooks, tests and the
CLI share one path: :func:`train`, :func:`attack`, :func:`evaluate`, :func:`report`, :func:`reproduce`."""

from __future__ import annotations

from advbench.api.attack import attack
from advbench.api.evaluate import evaluate
from advbench.api.models import load_model_module
from advbench.api.report import report
from advbench.api.reproduce import reproduce
from advbench.api.train import train
from advbench.resolve import make_train_config

__all__ = ["attack", "evaluate", "load_model_module", "make_train_config", "report", "reproduce", "train"]
