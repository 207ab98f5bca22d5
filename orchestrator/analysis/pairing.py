"""Which shared trial is compared with which independent trial, and at which iteration.

A shared trial pairs with the usable independent trials of equal ``baseline_key``: a seed's
baseline replicates (``replicate`` 0, 1, ...; runs without the column have one, replicate 0),
whose mean is the pair's baseline value (:func:`baseline_values`). Of several trials of one
(key, replicate) -- pooled runs of the same seeds -- the one with most valid iterations is used.
The pair's iterations are those the shared trial and the key's best-covered replicate both
reached; all pairs of one configuration are compared at one iteration, the last all of them
reached (see CONVENTIONS.md, "Pairing").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from orchestrator.analysis.load import SWEEP_HINT, AnalysisError, RunData, all_failed_error, what_to_do
from orchestrator.schema import FAILED_STATUSES, INDEPENDENT


@dataclass(frozen=True)
class Pairing:
    """The pairs (P of them) and what was left out of them, for T trials and C configurations."""

    shared: np.ndarray         # (P,) trial numbers of the shared trials
    base: np.ndarray           # (P,) each one's first independent trial (one per seed: the resampling cluster)
    base_trials: np.ndarray    # (P, R) all its baseline replicates' trial numbers, -1 padded
    config: np.ndarray         # (P,) position of the pair's configuration in config_ids
    iteration: np.ndarray      # (P,) index into RunData.iterations where the pair is compared
    config_ids: pd.Index       # (C,) the shared configurations, in order of first appearance
    config_cap: np.ndarray     # (C,) index of each configuration's common iteration (int max: no pair)
    usable: np.ndarray         # (T,) bool: neither failed nor without metrics
    last_iter: np.ndarray      # (T,) index of the trial's last valid iteration, -1 if none
    baselines: np.ndarray      # trial numbers of the usable independent trials
    unpaired_no_key: np.ndarray    # (T,) bool: shared, no independent trial of its baseline_key
    unpaired_bad_base: np.ndarray  # (T,) bool: shared, its independent trial is unusable
    no_common: int             # pairs without an iteration both trials reached
    off_config: int            # pairs without a valid iteration at or before their configuration's
    moved_back: int            # pairs compared before their own last common iteration
    duplicate_bases: int       # independent trials not used (another of the same key and replicate has more
                               # iterations)


def trial_arms(trials: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(status, mode, is_base) of every trial as arrays."""
    mode = trials["mode"].astype(str).to_numpy()
    return trials["status"].astype(str).to_numpy(), mode, mode == INDEPENDENT


def valid_iterations(values: np.ndarray) -> np.ndarray:
    """(T, I) bool: the trial reported a finite metric for every task it has at that iteration."""
    finite = np.isfinite(values)
    has_task = finite.any(1, keepdims=True)  # (T, 1, K): tasks the trial reports at all
    return (finite | ~has_task).all(2) & finite.any(2)


def last_true(mask: np.ndarray) -> np.ndarray:
    """Index of the last True per row, -1 where none."""
    n = mask.shape[1]
    idx = n - 1 - np.argmax(mask[:, ::-1], axis=1)
    return np.where(mask.any(1), idx, -1)


def _check_arms(data: RunData, is_base: np.ndarray, usable: np.ndarray, failed: np.ndarray) -> None:
    """Refuse runs that have no comparison to offer, with what to do about it."""
    runs = data.runs_text()
    if failed.all():
        raise all_failed_error(data.trials, data.run_dirs)
    if not is_base.any():
        raise AnalysisError(f"no baseline arm: {runs} has no independent (mode=independent) trials; "
                            f"rerun the sweep with the independent arm in the search space so that each "
                            f"shared trial has an independent trial of the same seed to compare with")
    if not (~is_base).any():
        raise AnalysisError(f"{runs} has only independent trials; rerun `{SWEEP_HINT}` with the "
                            f"shared modes (soft/hard) in the search space")
    if not (usable & is_base).any():
        raise AnalysisError(f"all {int(is_base.sum())} independent baseline trials in {runs} diverged, "
                            f"errored or have no metrics; rerun the sweep's independent arm")
    if not (usable & ~is_base).any():
        raise AnalysisError(f"all {int((~is_base).sum())} shared trials in {runs} diverged, errored or "
                            f"have no metrics; sharing never produced a model. "
                            f"{what_to_do(data.trials[~is_base])}")


def replicates_of(trials: pd.DataFrame) -> np.ndarray:
    """(T,) each trial's baseline replicate (0 where the run has no such column or no value)."""
    if "replicate" not in trials:
        return np.zeros(len(trials), np.int64)
    return pd.to_numeric(trials["replicate"], errors="coerce").fillna(0).to_numpy(np.int64)


def _baselines_of_key(keys: np.ndarray, replicate: np.ndarray, baselines: np.ndarray,
                      valid: np.ndarray) -> tuple[pd.Series, pd.Series, int]:
    """Per baseline_key: the representative independent trial (the replicate with most valid
    iterations, then the first), every replicate's trial as a -1 padded row, and how many
    independent trials were left unused (a second trial of one key and replicate)."""
    frame = pd.DataFrame({"key": keys[baselines], "rep": replicate[baselines], "trial": baselines,
                          "n": valid[baselines].sum(1)})
    frame = frame.sort_values(["key", "n", "trial"], ascending=[True, False, True])
    chosen = frame.drop_duplicates(["key", "rep"])
    representative = chosen.drop_duplicates("key")
    grouped = chosen.groupby("key", sort=False)["trial"].apply(list)
    width = max(1, int(grouped.map(len).max())) if len(grouped) else 1
    rows = grouped.map(lambda t: t + [-1] * (width - len(t)))
    return (pd.Series(representative["trial"].to_numpy(), index=representative["key"].to_numpy()), rows,
            len(frame) - len(chosen))


def _configuration_cap(pair_config: np.ndarray, pair_last: np.ndarray, n_cfg: int) -> np.ndarray:
    """Per configuration, the last iteration all its pairs reached. Under ASHA the seeds of a
    configuration stop at different rungs: mixing iterations lets a few iteration-1 pairs (FID in
    the hundreds) dominate the mean, and keeping only the seeds ASHA let go on would judge the
    configuration on the survivors of ASHA's own selection."""
    cap = np.full(n_cfg, np.iinfo(np.int64).max)
    np.minimum.at(cap, pair_config, pair_last)
    return cap


def pair_trials(data: RunData) -> Pairing:
    """Pair every usable shared trial with its independent trial; AnalysisError if none pairs."""
    status, _, is_base = trial_arms(data.trials)
    valid = valid_iterations(data.values)
    last_iter = last_true(valid)
    failed = np.isin(status, FAILED_STATUSES)
    usable = ~failed & (last_iter >= 0)
    _check_arms(data, is_base, usable, failed)

    keys = data.trials["baseline_key"].astype(str).to_numpy()
    baselines = np.flatnonzero(usable & is_base)
    base_of_key, replicates_of_key, duplicate_bases = _baselines_of_key(keys, replicates_of(data.trials),
                                                                        baselines, valid)
    shared_idx = np.flatnonzero(usable & ~is_base)
    partner = base_of_key.reindex(keys[shared_idx]).to_numpy()
    has_partner = ~pd.isna(partner)
    no_key = ~np.isin(keys[shared_idx], keys[is_base])
    shared, base = shared_idx[has_partner], partner[has_partner].astype(np.int64)
    common = valid[shared] & valid[base]
    pair_last = last_true(common)
    ok = pair_last >= 0
    shared, base, common, pair_last = shared[ok], base[ok], common[ok], pair_last[ok]
    if len(shared) == 0:
        raise AnalysisError(f"no shared trial in {data.runs_text()} has a usable independent trial with the same "
                            f"baseline_key (seed and knobs); rerun `{SWEEP_HINT}` with the independent arm for "
                            f"the same seeds")

    config_ids = data.trials["config_id"].astype(str).to_numpy()
    shared_configs = pd.Index(pd.unique(config_ids[~is_base]))
    pair_config = shared_configs.get_indexer(config_ids[shared])
    cap = _configuration_cap(pair_config, pair_last, len(shared_configs))
    common_last = last_true(common & (np.arange(common.shape[1]) <= cap[pair_config][:, None]))
    compared = common_last >= 0  # False only with holes in the curves: nothing in common with the others
    base_trials = np.array(replicates_of_key.reindex(keys[shared]).tolist(), dtype=np.int64).reshape(len(shared), -1)
    return Pairing(
        shared=shared[compared], base=base[compared], base_trials=base_trials[compared], config=pair_config[compared],
        iteration=common_last[compared], config_ids=shared_configs, config_cap=cap, usable=usable,
        last_iter=last_iter, baselines=baselines,
        unpaired_no_key=_mask(len(status), shared_idx[~has_partner & no_key]),
        unpaired_bad_base=_mask(len(status), shared_idx[~has_partner & ~no_key]),
        no_common=int((~ok).sum()), off_config=int((~compared).sum()),
        moved_back=int((compared & (common_last < pair_last)).sum()), duplicate_bases=duplicate_bases)


def baseline_values(values: np.ndarray, pairing: Pairing, transform=None) -> np.ndarray:
    """(P, K) each pair's baseline at its iteration: the mean over the seed's baseline replicates
    that have a value there (NaN where none has). ``transform`` (e.g. a safe log) is applied to
    each replicate's value before the mean (the log gives the geometric mean's log)."""
    trials = np.where(pairing.base_trials >= 0, pairing.base_trials, 0)
    per_replicate = values[trials, pairing.iteration[:, None]]  # (P, R, K)
    if transform is not None:
        per_replicate = transform(per_replicate)
    per_replicate = np.where((pairing.base_trials >= 0)[..., None], per_replicate, np.nan)
    counts = np.isfinite(per_replicate).sum(1)
    with np.errstate(invalid="ignore"):
        total = np.where(np.isfinite(per_replicate), per_replicate, 0.0).sum(1)
    return np.where(counts > 0, total / np.maximum(counts, 1), np.nan)


def _mask(n: int, true_at: np.ndarray) -> np.ndarray:
    out = np.zeros(n, bool)
    out[true_at] = True
    return out
