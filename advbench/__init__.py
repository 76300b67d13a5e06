"""advbench: benchmark adversarial robustness of image classifiers.

The Python API mirrors the CLI: :func:`train`, :func:`attack`, :func:`certify`, :func:`evaluate` and
:func:`report`;
:func:`evaluate_tensors` attacks your own ``nn.Module`` on your own tensors in one call, writing nothing.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "attack", "certify", "evaluate", "evaluate_tensors", "report", "train"]


def __getattr__(name: str):  # lazy: importing advbench must not import torch
    if name in {"train", "attack", "certify", "evaluate", "evaluate_tensors", "report"}:
        from advbench import api

        return getattr(api, name)
    raise AttributeError(name)
