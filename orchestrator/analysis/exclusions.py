"""What the paired statistics leave out, counted: excluded trials by reason, trials by status, and
divergence per configuration next to the baseline's own rate (divergence is a cost of sharing)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from orchestrator.analysis.pairing import Pairing
from orchestrator.schema import DIVERGED, ERROR, FAILED_STATUSES, INDEPENDENT


def exclusion_table(status: np.ndarray, is_base: np.ndarray, pairing: Pairing) -> pd.DataFrame:
    """reason, shared, independent: trials (or pairs) left out, only the reasons that occur."""
    def count(mask: np.ndarray) -> tuple[int, int]:
        return int((mask & ~is_base).sum()), int((mask & is_base).sum())

    no_metrics = ~np.isin(status, FAILED_STATUSES) & ~pairing.usable
    rows = [
        (DIVERGED, *count(status == DIVERGED)),
        (f"errored (status {ERROR})", *count(status == ERROR)),
        ("no metrics yet (pending)", *count(no_metrics)),
        ("unpaired: no independent trial with the same baseline_key", *count(pairing.unpaired_no_key)),
        ("unpaired: its independent trial diverged/errored/has no metrics", *count(pairing.unpaired_bad_base)),
        ("no iteration reached by both trials of the pair", pairing.no_common, 0),
        ("no valid iteration at or before its configuration's common iteration", pairing.off_config, 0),
        ("duplicate independent trial for a baseline_key and replicate (not used)", 0, pairing.duplicate_bases),
    ]
    excluded = pd.DataFrame(rows, columns=["reason", "shared", INDEPENDENT])
    return excluded[(excluded["shared"] > 0) | (excluded[INDEPENDENT] > 0)].reset_index(drop=True)


def status_table(status: np.ndarray, is_base: np.ndarray) -> pd.DataFrame:
    """Trials by status and arm (independent / shared)."""
    counts = pd.crosstab(pd.Series(status, name="status"),
                         pd.Series(np.where(is_base, INDEPENDENT, "shared"), name="arm")).reset_index()
    counts.columns.name = None
    return counts


def divergence_table(status: np.ndarray, is_base: np.ndarray, configs: pd.DataFrame) -> pd.DataFrame:
    """Divergence per configuration, the independent baseline first."""
    baseline = {"config_id": INDEPENDENT, "label": f"{INDEPENDENT} (baseline)", "n_trials": int(is_base.sum()),
                "n_diverged": int((is_base & (status == DIVERGED)).sum()),
                "n_error": int((is_base & (status == ERROR)).sum())}
    shared = configs[["config_id", "label", "n_trials", "n_diverged", "n_error"]]
    divergence = pd.concat([pd.DataFrame([baseline]), shared], ignore_index=True)
    divergence["diverged_rate"] = divergence["n_diverged"] / divergence["n_trials"].clip(lower=1)
    return divergence
