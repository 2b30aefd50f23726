"""Is model B better than model A on a task, beyond the evaluation's own noise?

The evaluators repeat a noisy measurement and return every repeat in ``result["runs"]``: classification fits a
classifier on ``n_experiments`` few-shot draws that are the *same* for every embedder (MTEB's protocol, fixed seed),
so two models' runs pair up draw by draw; clustering repeats k-means with seeds ``0..n_runs-1``, whose runs do not
pair (the same seed on other vectors is another initialisation). :func:`difference` gives the mean difference
``B - A`` with a Student-t confidence interval: over the per-draw differences when paired, Welch's interval when not.

A difference whose interval excludes 0 is beyond the evaluation noise of that protocol; the spread over training
seeds is a separate question (report it next to this).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Difference:
    """``mean`` = mean(B) - mean(A); ``[low, high]`` its ``confidence`` interval; ``n`` repeats (pairs or per side)."""

    mean: float
    low: float
    high: float
    n: int
    paired: bool
    confidence: float

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "significant": self.significant}


def _t_quantile(q: float, df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(q, df))


def difference(a: Sequence[float], b: Sequence[float], *, paired: bool, confidence: float = 0.95) -> Difference:
    """Mean of ``b`` minus mean of ``a`` with a two-sided t interval (see the module docstring).

    Args:
      a, b: the repeats of one measurement for models A and B (``result["runs"]``).
      paired: repeat ``i`` of ``a`` and of ``b`` share their randomness (same few-shot draw); needs equal lengths.
      confidence: interval level in (0, 1).

    Raises:
      ValueError: fewer than 2 repeats on a side, unequal lengths when paired, or a level outside (0, 1).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if min(a.size, b.size) < 2:
        raise ValueError(f"need at least 2 repeats per model, got {a.size} and {b.size}")
    q = 0.5 + confidence / 2
    if paired:
        if a.size != b.size:
            raise ValueError(f"paired repeats must have equal lengths, got {a.size} and {b.size}")
        d = b - a
        half = _t_quantile(q, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
        mean = float(d.mean())
        return Difference(mean, float(mean - half), float(mean + half), int(d.size), True, confidence)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se2 = va + vb
    df = se2 ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1)) if se2 > 0 else 1.0
    half = _t_quantile(q, df) * math.sqrt(se2)
    mean = float(b.mean() - a.mean())
    return Difference(mean, float(mean - half), float(mean + half), int(min(a.size, b.size)), False, confidence)
