"""gaussian-noise: training with Gaussian noise augmentation (Cohen, Rosenfeld and Kolter 2019), the base
classifier of randomized smoothing (``advbench certify RUN --method smoothing --sigma σ``; docs/certification.md).
Finlay and Oberman's Table 5 quotes Cohen et al.'s row, trained this way."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from advbench.defenses.base import DEFENSES, Defense, accuracy, check_positive


@dataclass
class GaussianNoiseOptions:
    """sigma: std of the noise added to every training image ([0, 1] pixel units; Cohen et al. train and certify
    at the same σ: 0.12, 0.25, 0.5 or 1.0 on CIFAR-10). clip: clamp the noisy image to [0, 1] (Cohen et al.: no)."""

    sigma: float = 0.25
    clip: bool = False

    def validate(self) -> None:
        """sigma > 0."""
        check_positive(self.sigma, "gaussian-noise sigma")


@DEFENSES.register("gaussian-noise", help="Gaussian noise augmentation (Cohen et al. 2019): CE on x + N(0, sigma^2 I), "
                   "the base classifier for randomized smoothing")
class GaussianNoise(Defense):
    """min_θ E_δ CE(f(x + δ), y), δ ~ N(0, σ²I), one fresh δ per image and step (the global RNG, seeded by the
    trainer, so a resumed run draws the same noise)."""

    Options = GaussianNoiseOptions
    inherent_passes = (1.0, 1.0)
    #: Cohen et al. certify the final model; robust or clean accuracy of the base classifier on clean images is
    #: not what smoothing certifies
    default_select = "last"

    def loss(self, model, x, y, ctx):
        """Mean CE on one noisy copy of the batch."""
        noisy = x + self.options.sigma * torch.randn_like(x)
        if self.options.clip:
            noisy = noisy.clamp(0, 1)
        logits = model(noisy)
        return F.cross_entropy(logits, y), {"acc": accuracy(logits, y)}
