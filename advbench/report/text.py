"""How reports write numbers and labels, the same in every format: accuracies with two decimals, eps-like values as
fractions of 255 (``2.5/255``), short row labels."""

from __future__ import annotations

import math
import re

#: option names whose values are perturbation sizes: always written as a fraction of 255 when one fits
_EPS_KEYS = re.compile(r"(^|_)(eps|epsilon|step_size|alpha|radius|delta)($|_)")
#: ``key=value`` inside a label's parentheses (values never contain ``,`` or ``)``: they are numbers or names)
_OPTION = re.compile(r"([A-Za-z_][\w.]*)=([^,()]+)")


def fmt_percent(value: float | None, digits: int = 2) -> str:
    """An accuracy in [0, 1] as a percentage with ``digits`` decimals (``9.00``), ``—`` when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{100 * value:.{digits}f}"


def eps_fraction(value: float, *, force: bool = False) -> str | None:
    """``value`` as ``k/255`` when it is a whole or half multiple of 1/255 (``0.0098…`` -> ``2.5/255``); None
    otherwise. Without ``force`` only small values (below 64/255) qualify, so 0.5 is not written 127.5/255."""
    if not math.isfinite(value) or value <= 0 or (value >= 64 / 255 and not force):
        return None
    k = value * 255
    half = round(2 * k) / 2
    if abs(k - half) > 1e-6 * max(1.0, k):
        return None
    return f"{half:g}/255"


def fmt_value(key: str, value: object) -> str:
    """An option value for a label: eps-like floats as fractions, other floats in 4 significant digits."""
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
    if number is None:
        return str(value)
    if isinstance(value, int) or (isinstance(value, str) and re.fullmatch(r"-?\d+", value)):
        return str(int(number))
    frac = eps_fraction(number, force=bool(_EPS_KEYS.search(key)))
    if frac is not None and (_EPS_KEYS.search(key) or number < 0.2):
        return frac
    return f"{number:.4g}"


def short_label(label: str) -> str:
    """A row label with its options written short: ``pgd-at (step_size=0.00980392156862745, steps=5)`` becomes
    ``pgd-at (step_size=2.5/255, steps=5)``; names, integers and short floats are kept as they are."""
    head, sep, rest = label.partition(" (")
    if not sep or not rest.endswith(")"):
        return label
    inner = _OPTION.sub(lambda m: f"{m.group(1)}={fmt_value(m.group(1), m.group(2).strip())}", rest[:-1])
    return f"{head} ({inner})"


def eps_text(value: float) -> str:
    """An eps for an axis tick or caption: ``8/255`` when it is a multiple of 1/510, else ``0.5``."""
    return eps_fraction(value, force=True) or f"{value:g}"
