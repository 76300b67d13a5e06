"""Threat models: norm and eps, with eps written as paper-style text ("8/255")."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from advbench.errors import UserError

NORMS = ("linf", "l2")
_FRACTION = re.compile(r"^([0-9]*\.?[0-9]+)/([0-9]*\.?[0-9]+)$")
_NUMBER = re.compile(r"^([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$")
_ZERO = re.compile(r"^0*\.?0*(?:[eE][-+]?[0-9]+)?$")


def parse_eps(text: str | float | int) -> tuple[float, str]:
    """Parse an eps written as ``8/255``, ``0.031``, ``0.5`` or ``1.74`` into ``(value, text)``.

    The text is kept literally so that ``8/255`` and ``0.031`` stay distinguishable in results.
    Raises UserError for negative, non-finite or malformed values.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
        literal = repr(value) if not float(value).is_integer() else str(int(value))
    else:
        literal = str(text)
        if any(c.isspace() for c in literal):
            raise UserError(f"invalid eps {literal!r}: write it without spaces, e.g. 8/255")
        m = _FRACTION.match(literal)
        if m:
            num, den = float(m.group(1)), float(m.group(2))
            if den == 0:
                raise UserError(f"invalid eps '{text}': division by zero; write e.g. 8/255")
            value = num / den
            literal = f"{m.group(1)}/{m.group(2)}"
        elif _NUMBER.match(literal):
            value = float(literal)
        else:
            raise UserError(f"invalid eps '{text}'; write a number or a fraction such as 8/255, 0.031 or 0.5")
    if not math.isfinite(value) or value < 0:
        raise UserError(f"invalid eps '{text}': must be a finite number >= 0, e.g. 8/255")
    if value == 0 and not _ZERO.match(literal.split("/")[0]):
        raise UserError(f"invalid eps '{text}': it is so small that it rounds to 0; write 0 or a larger value")
    return value, literal


def parse_eps_list(text: str) -> list[tuple[float, str]]:
    """Parse a comma-separated list of eps values ("4/255,8/255")."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise UserError("empty eps list; write e.g. --eps 4/255,8/255")
    return [parse_eps(p) for p in parts]


def check_eps_in_range(value: float, text: str, norm: str) -> None:
    """An Linf budget above 1 exceeds the whole [0, 1] image range: almost surely a mistyped fraction."""
    if norm == "linf" and value > 1:
        raise UserError(f"invalid eps '{text}' for linf: {value:g} is above 1, the whole [0, 1] pixel range; write "
                        "the budget as a fraction of it, e.g. 8/255")


def parse_norm(text: str) -> str:
    """Normalize a norm name ("Linf", "inf", "l2", "L2") to ``linf`` or ``l2``."""
    key = str(text).strip().lower().replace("ℓ", "l").replace("_", "")
    aliases = {"linf": "linf", "inf": "linf", "l-inf": "linf", "li": "linf", "l2": "l2", "2": "l2"}
    if key not in aliases:
        raise UserError(f"invalid norm '{text}'; choose linf or l2")
    return aliases[key]


@dataclass(frozen=True)
class ThreatModel:
    """A perturbation budget: ``norm`` in {linf, l2}, ``eps`` as float and as written."""

    norm: str = "linf"
    eps: float = 8 / 255
    eps_text: str = "8/255"

    @classmethod
    def parse(cls, eps: str | float = "8/255", norm: str = "linf") -> ThreatModel:
        """Build a ThreatModel from user text (``--eps 8/255 --norm linf``)."""
        value, literal = parse_eps(eps)
        the_norm = parse_norm(norm)
        check_eps_in_range(value, literal, the_norm)
        return cls(norm=the_norm, eps=value, eps_text=literal)

    def default_step(self) -> float:
        """The customary PGD step for this budget: 2/255 for Linf 8/255 (eps/4), eps/4 for L2."""
        return self.eps / 4

    def to_dict(self) -> dict:
        """JSON form, RobustBench-style field names."""
        return {"norm": self.norm, "eps": self.eps_text, "eps_float": self.eps}

    @classmethod
    def from_dict(cls, d: dict) -> ThreatModel:
        """Inverse of :meth:`to_dict`."""
        return cls.parse(d["eps"], d["norm"])

    def __str__(self) -> str:
        return f"{self.norm} eps={self.eps_text}"
