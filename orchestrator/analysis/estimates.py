"""The estimates of the analysis: per configuration, pooled and per mode (bootstrap over seeds),
the exploratory best configuration, benefit vs α, and the budget curves. Every resampling uses
the one ``rng_seed`` of the analysis (offset per estimate, so the estimates are independent)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from orchestrator.analysis import stats
from orchestrator.analysis.load import RunData
from orchestrator.analysis.pairing import Pairing, trial_arms
from orchestrator.schema import DIVERGED, ERROR, FAILED_STATUSES, HARD, INDEPENDENT, MODES, SOFT, direction

BEST_MIN_COVERAGE = 0.9  # share of the best-covered configuration's pairs a "best" candidate must have
KNOB_COLUMNS = ("data", "samples_per_task", "width", "z_dim", "lr", "batch_size", "gan_loss", "eval_samples",
                "steps_per_iteration")
DMTL = "ΔMTL %"
ALL_SHARED = "all shared"
# rng_seed offsets of the resampled estimates
SEED_PER_CONFIG, SEED_POOLED, SEED_BY_MODE, SEED_ALPHA = 0, 1, 2, 3


def _fmt_num(v: float) -> str:
    return f"{float(v):.3g}"


def config_label(row: dict, tasks: list[str], varying: list[str]) -> str:
    """A configuration as read in the report, e.g. ``soft α=0.1 λ=(1.5,0.5) width=64``."""
    mode = row["mode"]
    if mode == INDEPENDENT:
        return INDEPENDENT
    parts = [mode]
    if mode != HARD:
        parts.append(f"α={_fmt_num(row['alpha'])}")
    lams = [row.get(f"lambda_{t}", 1.0) for t in tasks]
    lams = [1.0 if (v is None or (isinstance(v, float) and math.isnan(v))) else v for v in lams]
    if len(set(lams)) > 1:
        parts.append("λ=(" + ",".join(_fmt_num(v) for v in lams) + ")")
    parts += [f"{k}={_fmt_knob(k, row[k])}" for k in varying]
    return " ".join(parts)


def _fmt_knob(name: str, value) -> str:
    """A varying knob's value; a missing samples_per_task (Parquet null, NaN in pandas) is every image."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "all" if name == "samples_per_task" else "none"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a float column of counts: 10, not 10.0
    return str(value)


def _first_trial_of_each_config(data: RunData, pairing: Pairing) -> tuple[pd.DataFrame, np.ndarray]:
    """The first trial row of every shared configuration, and each trial's configuration (-1: baseline)."""
    trial_config = pairing.config_ids.get_indexer(data.trials["config_id"].astype(str).to_numpy())
    in_shared = trial_config >= 0
    first_row = pd.Series(np.flatnonzero(in_shared)).groupby(trial_config[in_shared]).first().to_numpy()
    return data.trials.iloc[first_row], trial_config


def config_table(data: RunData, pairing: Pairing, benefit: np.ndarray, dmtl: np.ndarray, resamples: int,
                 rng_seed: int) -> pd.DataFrame:
    """One row per shared configuration (configs.csv), best mean ΔMTL first: identity, trial counts,
    common iteration, mean ΔMTL and per-task benefit with bootstrap CIs over seeds (before selection)."""
    trials, tasks, n_cfg = data.trials, data.tasks, len(pairing.config_ids)
    status, _, is_base = trial_arms(trials)
    first, trial_config = _first_trial_of_each_config(data, pairing)
    varying = [k for k in KNOB_COLUMNS if k in trials and trials.loc[~is_base, k].astype(str).nunique() > 1]
    est = stats.clustered_bootstrap(np.column_stack([benefit, dmtl]), pairing.config, pairing.base, n_cfg,
                                    resamples=resamples, seed=rng_seed + SEED_PER_CONFIG)

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(trial_config[(trial_config >= 0) & mask], minlength=n_cfg)

    mode = first["mode"].astype(str).to_numpy()
    alpha = (pd.to_numeric(first["alpha"], errors="coerce").to_numpy(float) if "alpha" in first
             else np.full(n_cfg, np.nan))
    n_trials, n_diverged = count(np.ones(len(trials), bool)), count(status == DIVERGED)
    has_cap = pairing.config_cap < len(data.iterations)
    columns = {
        "config_id": pairing.config_ids.to_numpy(),
        "label": [config_label(row, tasks, varying) for row in first.to_dict("records")],
        "mode": mode, "alpha": np.where(mode == HARD, np.inf, alpha),  # hard sharing is the α → ∞ limit
        "n_trials": n_trials, "n_pairs": est["n"], "n_diverged": n_diverged, "n_error": count(status == ERROR),
        "diverged_rate": n_diverged / np.maximum(n_trials, 1),
        "iteration": np.where(has_cap, data.iterations[np.where(has_cap, pairing.config_cap, 0)], np.nan),
        "dmtl": est["mean"][:, -1], "dmtl_lo": est["lo"][:, -1], "dmtl_hi": est["hi"][:, -1],
    }
    for t in tasks:
        lam = (pd.to_numeric(first[f"lambda_{t}"], errors="coerce") if f"lambda_{t}" in first
               else pd.Series(1.0, first.index))
        columns[f"lambda_{t}"] = lam.fillna(1.0).to_numpy()
    for k, t in enumerate(tasks):
        columns.update({f"benefit_{t}": est["mean"][:, k], f"lo_{t}": est["lo"][:, k], f"hi_{t}": est["hi"][:, k]})
    for knob in varying:
        columns[knob] = first[knob].to_numpy()
    configs = pd.DataFrame(columns)
    return configs.sort_values(["dmtl", "n_pairs"], ascending=[False, False], na_position="last").reset_index(drop=True)


def choose_best(configs: pd.DataFrame) -> tuple[str, int]:
    """The exploratory best configuration (highest mean ΔMTL among those with at least
    BEST_MIN_COVERAGE of the best-covered one's pairs: a configuration that lost seeds to
    divergence cannot win on its survivors) and how many it was chosen among."""
    min_pairs = max(1, math.ceil(BEST_MIN_COVERAGE * configs["n_pairs"].max()))
    eligible = (configs["n_pairs"] >= min_pairs) & configs["dmtl"].notna()
    if not eligible.any():
        eligible = configs["n_pairs"] > 0
    ranked = configs[eligible].sort_values("dmtl", ascending=False, na_position="last")
    return str(ranked["config_id"].iloc[0]), int(eligible.sum())


def _summary_frame(names: list[str], tasks: list[str], result: dict[str, np.ndarray]) -> pd.DataFrame:
    """Long table (group, task, benefit, ci_low, ci_high, n) from a bootstrap over [tasks..., ΔMTL]."""
    rows = []
    for g, name in enumerate(names):
        for k, task in enumerate(tasks + [DMTL]):
            rows.append({"group": name, "task": task, "benefit": result["mean"][g, k],
                         "ci_low": result["lo"][g, k], "ci_high": result["hi"][g, k], "n": int(result["n"][g])})
    return pd.DataFrame(rows)


def pooled_estimates(benefit: np.ndarray, dmtl: np.ndarray, pair_mode: np.ndarray, cluster: np.ndarray,
                     tasks: list[str], resamples: int, rng_seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All shared configurations pooled, and each mode pooled: bootstrap over seeds (pairs of one
    seed share its baseline trial, the cluster)."""
    values = np.column_stack([benefit, dmtl])
    pooled = stats.clustered_bootstrap(values, np.zeros(len(benefit), np.int64), cluster, 1, resamples=resamples,
                                       seed=rng_seed + SEED_POOLED)
    modes = pd.Index(sorted(pd.unique(pair_mode)))
    by_mode = stats.clustered_bootstrap(values, modes.get_indexer(pair_mode), cluster, len(modes),
                                        resamples=resamples, seed=rng_seed + SEED_BY_MODE)
    return _summary_frame([ALL_SHARED], tasks, pooled), _summary_frame(list(modes), tasks, by_mode)


def benefit_table(tasks: list[str], verdicts: pd.DataFrame, benefit: np.ndarray, best: pd.Series) -> pd.DataFrame:
    """benefit.csv: per task the pooled benefit with the headline's family-wise interval, and the
    α/mode of the exploratory best configuration."""
    pooled = verdicts.iloc[:len(tasks)]  # the "all shared" rows come first
    return pd.DataFrame({
        "task": tasks, "benefit": pooled["benefit"].to_numpy(), "ci_low": pooled["ci_low"].to_numpy(),
        "ci_high": pooled["ci_high"].to_numpy(), "n_pairs": np.isfinite(benefit).sum(0),
        "best_alpha": best["alpha"], "best_mode": best["mode"],
    })


@dataclass(frozen=True)
class AlphaCurve:
    """Benefit per task and ΔMTL at each α of soft sharing, hard sharing as α = -1 (the last column
    of mean/lo/hi is ΔMTL), pooled over λ and the other knobs, bootstrap over seeds. The feature
    modes' α weighs another term on another scale: they are never on this curve (their effect is
    in the per-mode tables)."""

    alphas: np.ndarray  # (A,) sorted; -1.0 = hard sharing
    mean: np.ndarray    # (A, K + 1)
    lo: np.ndarray
    hi: np.ndarray


def alpha_curve(data: RunData, pairing: Pairing, benefit: np.ndarray, dmtl: np.ndarray, resamples: int,
                rng_seed: int) -> AlphaCurve | None:
    """None where no shared pair has an α."""
    mode = data.trials["mode"].to_numpy()[pairing.shared]
    alpha = pd.to_numeric(data.trials["alpha"], errors="coerce").to_numpy()[pairing.shared]
    key = np.where(mode == HARD, -1.0, np.where(mode == SOFT, alpha, np.nan))
    ok = np.isfinite(key)
    alphas = np.unique(key[ok])
    if len(alphas) == 0:
        return None
    res = stats.clustered_bootstrap(np.column_stack([benefit, dmtl])[ok], np.searchsorted(alphas, key[ok]),
                                    pairing.base[ok], len(alphas), resamples=resamples, seed=rng_seed + SEED_ALPHA)
    return AlphaCurve(alphas=alphas, mean=res["mean"], lo=res["lo"], hi=res["hi"])


def trial_scores(values: np.ndarray, last_iter: np.ndarray) -> np.ndarray:
    """(T, K) metric of each trial at its own last valid iteration (NaN if none)."""
    out = np.full((len(last_iter), values.shape[2]), np.nan)
    has = last_iter >= 0
    out[has] = values[np.flatnonzero(has), last_iter[has]]
    return out


def budget_curves(data: RunData, pairing: Pairing, points: int = 40) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per arm: (k, quantiles (len(k), 3)) of the best mean-over-tasks metric among k random trials;
    failed trials count as draws with no model (Lucic et al. 2018)."""
    status, modes, _ = trial_arms(data.trials)
    usable = pairing.usable
    counted = usable | np.isin(status, FAILED_STATUSES)
    scores = np.where(usable, stats.nanmean_rows(trial_scores(data.values, pairing.last_iter)), np.nan)
    arms = {INDEPENDENT: counted & (modes == INDEPENDENT), ALL_SHARED: counted & (modes != INDEPENDENT)}
    for m in (m for m in MODES if m != INDEPENDENT):  # every shared mode present, when there are several
        if (counted & (modes == m)).any() and len(set(modes[counted]) - {INDEPENDENT}) > 1:
            arms[m] = counted & (modes == m)
    out = {}
    for arm, sel in arms.items():
        n = int(sel.sum())
        if n:
            ks = np.unique(np.geomspace(1, n, min(points, n)).round().astype(int))
            out[arm] = (ks, stats.best_of_k(scores[sel], direction(data.metric) < 0, ks))
    return out
