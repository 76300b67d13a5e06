"""Expectation over transformation (EOT, Athalye et al. 2018) for randomized models, and a deterministic verdict.

A randomized model draws its noise from torch's global generator inside ``forward``. Two things go wrong
when a gradient attack treats it as an ordinary model: each gradient is that of one random draw (a noisy
ascent direction), and the attack's verdict ("is this image misclassified?") is one noisy forward pass,
so an image counted as fooled at one step may be judged correct by a fresh draw afterwards (accuracy then
*rises* with more steps). Here:

- :func:`eot_logits` is the gradient-pass output: the model's outputs over ``k`` fresh draws combined into
  one (the log of the expected softmax probability, or the mean logit);
- :class:`Verdict` judges images by ``k_v`` draws made under a fixed seed (a forked generator, so the
  attack's own random stream is untouched): a deterministic function of the image for a batch of fixed
  shape, combined by expected probability (``mean-prob``) or by majority vote (``majority``);
- :func:`seeded_model_rng` runs code with the global generators seeded and restores them afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from advbench.core.seeding import derived_seed

EOTAverage = Literal["prob", "logits"]
VerdictRule = Literal["mean-prob", "majority"]


@contextlib.contextmanager
def seeded_model_rng(device: torch.device, *parts: object) -> Iterator[None]:
    """Seed the global CPU generator (and the current CUDA device's, for a CUDA ``device``) from ``parts``;
    restore both on exit. Randomness a model draws inside ``forward`` is then reproducible."""
    cuda = device.type == "cuda"
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if cuda else []
    seed = derived_seed(*parts)
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(devices[0]):
                torch.cuda.manual_seed(seed)
        yield


def _combine(outputs: list[torch.Tensor], average: EOTAverage) -> torch.Tensor:
    """One output from several draws: log of the mean softmax (``prob``) or the mean logit (``logits``)."""
    if len(outputs) == 1:  # one draw: the logits themselves (log-softmax is a shift; every attack loss ignores it)
        return outputs[0]
    stacked = torch.stack([o.float() for o in outputs])
    if average == "logits":
        return stacked.mean(0)
    probs = F.softmax(stacked, dim=-1).mean(0)
    return torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))


def eot_logits(model: nn.Module, x: torch.Tensor, samples: int, average: EOTAverage = "prob") -> torch.Tensor:
    """The model's output averaged over ``samples`` fresh draws of its randomness (for gradients).

    ``prob``: log E[softmax f(x)], the expected-probability classifier, whose argmax is the verdict's; its
    cross-entropy gradient is that of -log E[p_y]. ``logits``: E[f(x)], which keeps logit-scale-free losses
    (DLR, margin) usable when the logits are also saturated. With one sample it is f(x).
    """
    return _combine([model(x) for _ in range(max(1, samples))], average)


class Verdict:
    """A deterministic judge of a randomized model: ``k_v`` draws under a fixed seed, combined by a rule.

    ``judge(x, y)`` returns the per-image correctness [B] (bool). The draws are made with the global
    generators seeded from ``seed`` (and restored afterwards), so for a batch of the same shape the
    verdict of row i depends only on the image in row i: a first misclassified iterate stays
    misclassified when judged again. ``samples=1`` with a deterministic model is the plain argmax.
    """

    def __init__(self, model: nn.Module, samples: int, seed: int, rule: VerdictRule = "mean-prob") -> None:
        self.model = model
        self.samples = max(1, samples)
        self.seed = seed
        self.rule = rule

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Per-class scores whose argmax is the verdict (mean probability, or votes + a mean-probability tie break)."""
        with torch.no_grad(), seeded_model_rng(x.device, "verdict", self.seed):
            outs = [self.model(x).float() for _ in range(self.samples)]
        probs = torch.stack([F.softmax(o, dim=-1) for o in outs]).mean(0)
        if self.rule == "mean-prob":
            return probs
        votes = torch.zeros_like(probs)
        for o in outs:
            votes.scatter_add_(1, o.argmax(1, keepdim=True), torch.ones_like(votes[:, :1]))
        return votes + probs / (self.samples + 1)  # ties between equal vote counts go to the higher mean probability

    def judge(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Correct (bool [B]) under the verdict."""
        if x.shape[0] == 0:
            return torch.zeros(0, dtype=torch.bool, device=y.device)
        return self.scores(x).argmax(1) == y


class EOTModule(nn.Module):
    """A randomized model seen through EOT, for attacks that only take a model (AutoAttack's APGD, FAB, Square):
    a forward pass with gradients on averages ``samples`` draws (:func:`eot_logits`); one without is the
    deterministic ``verdict`` (log of its scores), so every judgement the attack makes is reproducible."""

    def __init__(self, model: nn.Module, samples: int, verdict: Verdict, average: EOTAverage = "prob") -> None:
        super().__init__()
        self.model, self.samples, self.verdict, self.average = model, samples, verdict, average

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return eot_logits(self.model, x, self.samples, self.average)
        return torch.log(self.verdict.scores(x).clamp_min(torch.finfo(torch.float32).tiny))


def batch_verdict(model: nn.Module, samples: int, batch: int, rule: VerdictRule = "mean-prob") -> Verdict:
    """The verdict every attack and the clean pass share for evaluation batch ``batch``: its draws are seeded
    by the batch index alone, so clean and attacked images of one batch are judged by the same function."""
    return Verdict(model, samples, derived_seed("batch", batch), rule)


def is_randomized(model: nn.Module, x: torch.Tensor, tol: float = 1e-5) -> bool:
    """Whether two no-grad passes on ``x`` differ (relative to the output's size): the model draws randomness."""
    with torch.no_grad():
        a, b = model(x), model(x)
    return bool((a - b).abs().max() > tol * (a.abs().max() + 1e-12))
