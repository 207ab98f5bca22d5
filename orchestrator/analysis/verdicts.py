"""Gain / negative-transfer verdicts, made only on estimates without selection (see
CONVENTIONS.md, "Verdicts")."""
from __future__ import annotations

import numpy as np
import pandas as pd

from orchestrator.analysis import stats

GAIN, LOSS, UNCLEAR, POINT_ESTIMATE = "gain", "loss", "unclear", "point estimate"
NO_VERDICT_PBT = "no verdict (PBT)"
VERDICT_LABELS = {GAIN: "gain", LOSS: "NEGATIVE TRANSFER", UNCLEAR: "unclear", POINT_ESTIMATE: "point estimate",
                  NO_VERDICT_PBT: NO_VERDICT_PBT}  # as the report writes them


def verdict(lo: float, hi: float, n: int) -> str:
    """'gain' / 'loss' (negative transfer) / 'unclear' / 'point estimate' for one CI."""
    if n < 2 or not np.isfinite(lo):
        return POINT_ESTIMATE
    if lo > 0:
        return GAIN
    if hi < 0:
        return LOSS
    return UNCLEAR


def headline_verdicts(benefit: np.ndarray, pair_mode: np.ndarray, cluster: np.ndarray, tasks: list[str],
                      pbt: bool = False, level: float = 0.95) -> pd.DataFrame:
    """Gain / loss verdicts per task made without selection, with family-wise error control.

    Groups: all shared configurations pooled, and each sharing mode pooled when there are several.
    Units: seeds (pairs averaged within their baseline trial). Interval: Student-t at level
    ``1 - (1 - level) / m`` with m = tasks × groups (Bonferroni), so that the chance of any false
    verdict in the headline is <= 1 - level. Returns one row per (group, task), "all shared" first:
    group, task, benefit, ci_low, ci_high, n (seeds), m, verdict."""
    modes = sorted(pd.unique(pair_mode))
    names = ["all shared"] + (modes if len(modes) > 1 else [])
    rows = [np.arange(len(benefit))] + [np.flatnonzero(pair_mode == m) for m in names[1:]]
    group = np.concatenate([np.full(len(r), g) for g, r in enumerate(rows)])
    pick = np.concatenate(rows)
    units, unit_group = stats.cluster_units(benefit[pick], group, cluster[pick])
    family = len(tasks) * len(names)
    res = stats.t_interval(units, unit_group, len(names), level=1.0 - (1.0 - level) / family)
    frame = pd.DataFrame({
        "group": np.repeat(names, len(tasks)), "task": np.tile(tasks, len(names)),
        "benefit": res["mean"].ravel(), "ci_low": res["lo"].ravel(), "ci_high": res["hi"].ravel(),
        "n": np.repeat(res["n"], len(tasks)), "m": family})
    frame["verdict"] = [NO_VERDICT_PBT if pbt else verdict(lo, hi, n)
                        for lo, hi, n in zip(frame["ci_low"], frame["ci_high"], frame["n"])]
    return frame
