"""Rung records of asynchronous successive halving (ASHA) for arms trained in groups (plain Python).

Tune's ASHA stops whole trials; a trial that trains a group of arms needs the decision per arm.
:class:`RungRecords` keeps what Tune's ``AsyncHyperBandScheduler`` keeps (one bracket): rungs at
``grace_period · reduction_factor^k`` iterations below ``max_t``, each with the metric of every
arm that reached it. A group hands in its arms' metrics when they reach a rung together; an arm
is stopped when its value is worse than the ``1 - 1/reduction_factor`` quantile of every value
recorded at that rung so far, its own group's included. So a group holding every arm halves
synchronously (keeps the best 1/reduction_factor), and arms arriving one at a time are judged
against the arms before them, as ASHA judges trials. One instance serves a whole sweep (the
Tune wrapper shares it between groups as a Ray actor).
"""
from __future__ import annotations

import math

import numpy as np


class RungRecords:
    """ASHA's rungs and the metric (lower is better) each arm reached there."""

    def __init__(self, max_t: int, grace_period: int = 1, reduction_factor: float = 2) -> None:
        if not (max_t >= grace_period >= 1 and reduction_factor > 1):
            raise ValueError("need max_t >= grace_period >= 1 and reduction_factor > 1")
        self.max_t, self.reduction_factor = max_t, reduction_factor
        count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
        # A rung at max_t decides nothing: every arm ends there anyway (as in Tune's ASHA).
        self.milestones = [m for m in (grace_period * reduction_factor ** k for k in range(count)) if m < max_t]
        self.records: dict[float, dict[str, float]] = {m: {} for m in self.milestones}
        self.stopped: set[tuple[float, str]] = set()

    def judge(self, iteration: int, values: dict[str, float]) -> list[str]:
        """Record the arms ``values`` (arm key → metric, lower is better) that reached
        ``iteration``; return the keys of those to stop. Only a rung's iteration decides; an
        arm is judged once per rung (reported again, e.g. by a group restored from an older
        checkpoint, it gets the same answer)."""
        if iteration not in self.records:
            return []
        recorded = self.records[iteration]
        new = {k: float(v) for k, v in values.items() if k not in recorded}
        recorded.update(new)
        cutoff = np.nanpercentile(list(recorded.values()), 100 / self.reduction_factor)
        self.stopped.update((iteration, k) for k, v in new.items() if not v <= cutoff)  # NaN: stopped
        return sorted(k for k in values if (iteration, k) in self.stopped)
