"""Early-stopping rules for the classifier trainer's grid of runs (callbacks called after every epoch).

A rule sees one run's history so far (:class:`RunView`) and answers :meth:`StopRule.update`: the epoch whose model
it keeps (``selected``) and whether the run stops now. The grid records, per rule and run, the stop epoch, the
selected epoch and the test metrics there; a rule with ``halt=True`` also ends training once every run of a
compiled group has been stopped by such a rule (with ``halt=False`` training runs to the last epoch, which is how the
experiments compare the stop with the best and the last epoch).

- :class:`LStarStop`: the gambler's-loss rule (arXiv:2002.06541): stop at the first epoch after the NLL warm-up whose
  mean training loss falls below ``L*(n, o)`` (``losses.gamblers_stop_threshold``); needs the noise rate, a fixed
  payoff and ``(1 - n) o > 1``; applies only to such runs.
- :class:`NoisyValidationStop`: the usual practice without clean labels: keep the epoch with the best accuracy (or
  loss) on a held-out validation split whose labels carry the same noise; stop after ``patience`` epochs without
  improvement. Applies to every run; needs ``data.val_fraction > 0``.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from gecko_jax import losses
from gecko_jax.train.grid_config import GridRun


@dataclasses.dataclass
class RunView:
    """One run after ``epoch`` epochs (1-based): its spec and per-epoch history (``train_loss``, ``test_acc``,
    ``test_loss``, and with a validation split ``val_acc`` / ``val_loss``; one entry per epoch)."""

    run: GridRun
    epoch: int
    history: dict


class StopRule(Protocol):
    name: str  # key of the rule's record in the results
    halt: bool  # end training once every run of a group is stopped
    needs_validation: bool  # reads val_acc / val_loss (data.val_fraction > 0)

    def applies(self, run: GridRun) -> bool: ...

    def update(self, view: RunView) -> tuple[int | None, bool]:
        """(selected epoch so far or None, stop now)."""

    def describe(self, run: GridRun) -> dict: ...


@dataclasses.dataclass(frozen=True)
class LStarStop:
    """Gambler's analytical early stop: the first epoch after warm-up with mean training loss ``< L*``.

    Attributes:
      assumed_noise_rate: the noise rate the rule is told (None: the run's true synthetic rate). Under pair-flip
        noise the rule is applied as is (it is derived for symmetric noise).
      name, halt: see :class:`StopRule`.
    """

    assumed_noise_rate: float | None = None
    name: str = "lstar"
    halt: bool = True
    needs_validation = False

    def threshold(self, run: GridRun) -> float | None:
        if run.family != "gamblers" or run.loss.payoff is None:
            return None
        n = run.noise_rate if self.assumed_noise_rate is None else self.assumed_noise_rate
        if (1.0 - n) * float(run.loss.payoff) <= 1.0:
            return None
        return float(losses.gamblers_stop_threshold(n, float(run.loss.payoff)))

    def applies(self, run: GridRun) -> bool:
        return self.threshold(run) is not None

    def update(self, view: RunView) -> tuple[int | None, bool]:
        loss = view.history["train_loss"][-1]
        if view.epoch > view.run.loss.nll_warmup_epochs and loss < self.threshold(view.run):
            return view.epoch, True
        return None, False

    def describe(self, run: GridRun) -> dict:
        return {"threshold": self.threshold(run)}


@dataclasses.dataclass(frozen=True)
class NoisyValidationStop:
    """Early stopping on a noisy validation split: keep the best epoch, stop after ``patience`` without gain.

    Attributes:
      patience: epochs without improvement before stopping.
      metric: ``"val_acc"`` (higher is better) or ``"val_loss"`` (lower is better), against the noisy labels.
      name, halt: see :class:`StopRule`.
    """

    patience: int = 5
    metric: str = "val_acc"
    name: str = "noisy_val"
    halt: bool = True
    needs_validation = True

    def __post_init__(self):
        if self.metric not in ("val_acc", "val_loss"):
            raise ValueError(f"NoisyValidationStop: metric={self.metric!r}, expected 'val_acc' or 'val_loss'")
        if not (isinstance(self.patience, int) and self.patience >= 1):
            raise ValueError(f"NoisyValidationStop: patience={self.patience!r}, expected an int >= 1")

    def applies(self, run: GridRun) -> bool:
        return True

    def update(self, view: RunView) -> tuple[int | None, bool]:
        values = np.asarray(view.history[self.metric], np.float64)
        best = int(np.argmax(values) if self.metric == "val_acc" else np.argmin(values)) + 1
        return best, view.epoch - best >= self.patience

    def describe(self, run: GridRun) -> dict:
        return {"patience": self.patience, "metric": self.metric}
