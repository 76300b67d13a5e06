"""The Python API, one module per command. The CLI calls exactly these functions, so notebooks, tests and the
CLI share one path: :func:`train`, :func:`attack`, :func:`certify`, :func:`evaluate`, :func:`report`,
:func:`reproduce`; with
:func:`evaluate_tensors` (your own model and tensors in one call), :func:`evaluate_zoo_model` (a RobustBench zoo
model) and :func:`export` (RobustBench leaderboard JSON, TensorBoard event files)."""

from __future__ import annotations

from advbench.api.attack import attack
from advbench.api.certify import certify
from advbench.api.evaluate import evaluate
from advbench.api.export import export
from advbench.api.models import load_model_module
from advbench.api.report import report
from advbench.api.reproduce import reproduce
from advbench.api.tensors import evaluate_tensors
from advbench.api.train import train
from advbench.api.zoo import evaluate_zoo_model, load_zoo_model
from advbench.resolve import make_train_config

__all__ = ["attack", "certify", "evaluate", "evaluate_tensors", "evaluate_zoo_model", "export", "load_model_module",
           "load_zoo_model", "make_train_config", "report", "reproduce", "train"]
