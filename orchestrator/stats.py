"""Statistics for the task-sharing analysis, and a generator of synthetic run directories.

Conventions (the report states them too):

* Direction: ``fid`` and ``kid`` are lower-is-better; ``precision``, ``recall`` and ``accuracy``
  are higher-is-better (orchestrator.schema).
* Benefit of sharing on one task, for one pair (a shared trial and the independent trial with the
  same ``baseline_key``), is always "positive = sharing helped":
  ``baseline - shared`` for a lower-is-better metric, ``shared - baseline`` otherwise.
* ΔMTL (Maninis et al., 2019): the mean over tasks of
  ``(-1)^l_i (M_shared,i - M_base,i) / M_base,i * 100`` with ``l_i = 1`` for a lower-is-better
  metric, i.e. the mean relative benefit in percent; positive = better. The denominator is
  ``|M_base|`` so that a metric that can be negative (the unbiased KID) keeps the sign convention;
  a zero baseline gives NaN for that task.
* Confidence intervals: percentile bootstrap over independent units (pairs, i.e. seeds), with
  Hesterberg's small-sample expansion (Hesterberg 2015, "What teachers should know about the
  bootstrap"): the percentile levels are widened to ``Phi(-sqrt(n/(n-1)) * t_{n-1, 0.975})`` so
  that the interval is not anti-conservative with the 3-10 seeds a sweep has. A plain percentile
  interval covers only ~85% at n=5. No bootstrap interval can leave the range of the observed
  values, so with n < 6 units coverage is below 95% whatever is done; the report says so.
  One unit gives a point estimate and no interval.
* Headline verdicts (gain / negative transfer) are made on estimates without selection (all
  shared configurations pooled, and each sharing mode pooled) with simultaneous intervals:
  Student-t intervals of the mean over seeds at level ``1 - 0.05 / m`` (Bonferroni over the m
  task × group verdicts), so that the chance of any false verdict in a sweep is <= 5% (when the
  seed means are roughly normal). The bootstrap cannot be used for that: with 5-10 seeds it does
  not resolve tail probabilities of 0.05 / m (a resample never leaves the range of the seeds).
* KID: the unbiased KID of one trial can be ~0 or negative, so a relative change against it can
  be arbitrarily large. For metrics in ``UNSTABLE_RELATIVE`` the analysis divides by the task's
  median independent value over all baseline trials instead (see ``relative_benefit_pct``).
* Budget curve (Lucic et al., 2018): the distribution of the best metric among k trials drawn
  without replacement, computed exactly from the order statistics (this is what resampling
  estimates, without its noise). Failed trials count as draws that yield nothing.

Everything here is vectorised numpy; nothing loops over rows.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.schema import (DIVERGED, ERROR, HARD, INDEPENDENT, METRICS_DIR, METRICS_SCHEMA, RUNNING,
                                 SCHEMA_VERSION, SOFT, SWEEP_FILE, TERMINATED, TRIALS_FILE, direction)

# metrics whose value for one trial can be ~0 or negative: relative changes use a per-task scale
UNSTABLE_RELATIVE = ("kid",)


def paired_benefit(shared: np.ndarray, base: np.ndarray, metric: str) -> np.ndarray:
    """Benefit of sharing, positive = sharing helped (baseline - shared for lower-is-better)."""
    return direction(metric) * (np.asarray(shared, float) - np.asarray(base, float))


def relative_benefit_pct(shared: np.ndarray, base: np.ndarray, metric: str,
                         scale: np.ndarray | None = None) -> np.ndarray:
    """Per-task relative benefit in percent, the summand of ΔMTL; NaN where the denominator is 0.

    The denominator is ``|base|`` (the pair's own baseline), or ``scale`` (one positive value per
    task, broadcast over the rows) when given: used for metrics in ``UNSTABLE_RELATIVE``, whose
    per-trial baseline can be ~0. A non-positive or NaN scale gives NaN for that task."""
    base = np.asarray(base, float)
    if scale is None:
        denom = np.where(base == 0, np.nan, np.abs(base))
    else:
        scale = np.asarray(scale, float)
        denom = np.where(np.isfinite(scale) & (scale > 0), scale, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * paired_benefit(shared, base, metric) / denom


def delta_mtl(shared: np.ndarray, base: np.ndarray, metric: str, scale: np.ndarray | None = None) -> np.ndarray:
    """ΔMTL per row of (pairs, tasks) arrays: mean relative benefit over the tasks, in percent
    (``scale`` as in :func:`relative_benefit_pct`)."""
    return nanmean_rows(relative_benefit_pct(shared, base, metric, scale))


def nanmean_rows(x: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN, NaN (no warning) where a row has no finite value."""
    finite = np.isfinite(x)
    count = finite.sum(-1)
    total = np.where(finite, x, 0.0).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def student_t_two_sided(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` (closed form, Abramowitz & Stegun 26.7.3-4).

    Written out so that the analysis does not import scipy.stats (~1 s of start-up per run)."""
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 1:
        term, total = s * math.cos(theta), 0.0
        for j in range(1, (df - 1) // 2 + 1):  # cos^(2j-1) terms with coefficients 2·4../(1·3..)
            total += term
            term *= c2 * (2 * j) / (2 * j + 1)
        return (2 / math.pi) * (theta + (total if df > 1 else 0.0))
    term, total = 1.0, 0.0
    for j in range(1, df // 2 + 1):
        total += term
        term *= c2 * (2 * j - 1) / (2 * j)
    return s * total


@functools.lru_cache(maxsize=None)
def student_t_quantile(p: float, df: int) -> float:
    """The p-quantile (p > 0.5) of Student's t with integer df, by bisection on the exact CDF."""
    target = 2 * p - 1
    lo, hi = 0.0, 1.0
    while student_t_two_sided(hi, df) < target:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if student_t_two_sided(mid, df) < target else (lo, mid)
        if hi - lo < 1e-12 * hi:
            break
    return (lo + hi) / 2


def normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


def expanded_quantiles(n: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile levels of Hesterberg's expanded percentile interval for n units."""
    if n < 2:
        return (float("nan"), float("nan"))
    tail = (1.0 - level) / 2.0
    z = math.sqrt(n / (n - 1.0)) * student_t_quantile(1.0 - tail, n - 1)
    lo = normal_cdf(-z)
    return lo, 1.0 - lo


def group_means(values: np.ndarray, group: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """NaN-aware column means of ``values`` (N, K) per group code; returns (means (G, K), counts (G,))."""
    values = np.asarray(values, float).reshape(len(group), -1)
    finite = np.isfinite(values)
    filled = np.where(finite, values, 0.0)
    sums = np.stack([np.bincount(group, filled[:, j], minlength=n_groups) for j in range(values.shape[1])], 1)
    counts_k = np.stack([np.bincount(group, finite[:, j], minlength=n_groups) for j in range(values.shape[1])], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts_k > 0, sums / np.maximum(counts_k, 1), np.nan)
    return means, np.bincount(group, minlength=n_groups)


def bootstrap_mean_ci(values: np.ndarray, group: np.ndarray, n_groups: int, *, resamples: int = 2000,
                      level: float = 0.95, seed: int = 0,
                      max_chunk_elements: int = 4_000_000) -> dict[str, np.ndarray]:
    """Mean and expanded-percentile bootstrap CI of the mean of ``values`` per group.

    ``values``: (N, K) rows are independent units (e.g. one pair per seed), columns are
    quantities resampled together (the same resample for all columns of a unit).
    ``group``: (N,) int codes in [0, n_groups). Returns arrays ``mean``, ``lo``, ``hi`` (G, K)
    and ``n`` (G,). Groups with one unit get lo = hi = NaN (point estimate only).
    """
    values = np.asarray(values, float)
    squeeze = values.ndim == 1
    values = values.reshape(len(group), -1)
    group = np.asarray(group, np.int64)
    k = values.shape[1]
    mean, n = group_means(values, group, n_groups)
    lo = np.full((n_groups, k), np.nan)
    hi = np.full((n_groups, k), np.nan)
    sorted_values = values[np.argsort(group, kind="stable")]
    starts = np.concatenate([[0], np.cumsum(n)[:-1]])
    rng = np.random.default_rng(seed)
    finite = np.isfinite(sorted_values)
    filled = np.where(finite, sorted_values, 0.0)
    has_nan = not finite.all()
    for size in np.unique(n[n >= 2]):
        size = int(size)
        gids = np.flatnonzero(n == size)
        rows = starts[gids][:, None] + np.arange(size)
        block_values, block_finite = filled[rows], finite[rows].astype(float)  # (Gs, size, K)
        q = expanded_quantiles(size, level)
        chunk = max(1, max_chunk_elements // (resamples * size))
        for c in range(0, len(gids), chunk):
            g = len(gids[c:c + chunk])
            # resample as counts: how often each unit is drawn, (g, B, size); then one batched matmul
            pick = rng.integers(0, size, size=(g * resamples, size), dtype=np.int32)
            pick += (np.arange(g * resamples, dtype=np.int32) * size)[:, None]
            counts = np.bincount(pick.ravel(), minlength=g * resamples * size).reshape(g, resamples, size)
            counts = counts.astype(float)
            sums = counts @ block_values[c:c + chunk]  # (g, B, K)
            weight = counts @ block_finite[c:c + chunk] if has_nan else float(size)
            with np.errstate(invalid="ignore", divide="ignore"):
                boot = sums / weight
            quantile = np.nanquantile if has_nan else np.quantile
            ql, qh = quantile(boot, q, axis=1)
            lo[gids[c:c + chunk]] = ql
            hi[gids[c:c + chunk]] = qh
    out = {"mean": mean, "lo": lo, "hi": hi, "n": n}
    if squeeze:
        out.update({key: out[key][:, 0] for key in ("mean", "lo", "hi")})
    return out


def cluster_units(values: np.ndarray, group: np.ndarray, cluster: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows averaged within (group, cluster): the independent units (U, K) and their group (U,).
    Rows of one cluster (e.g. pairs sharing one baseline trial, i.e. one seed) are not independent."""
    values = np.asarray(values, float).reshape(len(group), -1)
    group = np.asarray(group, np.int64)
    cluster = np.asarray(cluster, np.int64)
    key = group * (int(cluster.max(initial=0)) + 1) + cluster
    uniq, inverse = np.unique(key, return_inverse=True)
    unit_means, _ = group_means(values, inverse.ravel(), len(uniq))
    return unit_means, uniq // (int(cluster.max(initial=0)) + 1)


def clustered_bootstrap(values: np.ndarray, group: np.ndarray, cluster: np.ndarray, n_groups: int,
                        **kwargs) -> dict[str, np.ndarray]:
    """Bootstrap CI per group where rows of one cluster are not independent: rows are first
    averaged within (group, cluster), then the cluster means are resampled. Used for pooled
    estimates across configurations."""
    unit_means, unit_group = cluster_units(values, group, cluster)
    return bootstrap_mean_ci(unit_means, unit_group, n_groups, **kwargs)


def t_interval(values: np.ndarray, group: np.ndarray, n_groups: int, level: float = 0.95) -> dict[str, np.ndarray]:
    """Mean and two-sided Student-t interval of the mean per group and column (NaN-aware per column).

    ``values`` (N, K): independent units. Returns ``mean``, ``lo``, ``hi`` (G, K) and ``n`` (G,)
    units per group; lo = hi = NaN where a column has fewer than 2 finite units."""
    values = np.asarray(values, float).reshape(len(group), -1)
    group = np.asarray(group, np.int64)
    finite = np.isfinite(values)
    mean, n = group_means(values, group, n_groups)
    count = np.stack([np.bincount(group, finite[:, j], minlength=n_groups) for j in range(values.shape[1])], 1)
    resid = np.where(finite, values - mean[group], 0.0)
    ss = np.stack([np.bincount(group, resid[:, j] ** 2, minlength=n_groups) for j in range(values.shape[1])], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(ss / (count - 1) / count)
    t = np.full(count.shape, np.nan)
    for df in np.unique(count[count >= 2] - 1):  # a few distinct seed counts: one quantile each
        t[count - 1 == df] = student_t_quantile(1.0 - (1.0 - level) / 2.0, int(df))
    half = t * se
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n}


def best_of_k(scores: np.ndarray, lower_is_better: bool, ks: np.ndarray,
              quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)) -> np.ndarray:
    """Quantiles of the best score among k trials drawn without replacement, for each k in ``ks``.

    ``scores``: one per trial; NaN/inf = a failed trial (never the best). Returns an array
    (len(ks), len(quantiles)); +inf (or -inf when higher is better) where that quantile of the
    draws has no successful trial. Exact: with the N scores sorted best first,
    P(best is worse than the j-th) = C(N - j, k) / C(N, k).
    """
    scores = np.asarray(scores, float)
    worst = np.inf if lower_is_better else -np.inf
    scores = np.where(np.isfinite(scores), scores, worst)
    ordered = np.sort(scores) if lower_is_better else -np.sort(-scores)
    n = len(ordered)
    ks = np.asarray(ks, int)
    j = np.arange(1, n + 1)
    log_factorial = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])  # log m! for m = 0..n
    # log C(n - j, k) - log C(n, k) = log (n-j)! - log (n-j-k)! - log n! + log (n-k)!, -inf where n - j < k
    valid = (n - j)[None, :] >= ks[:, None]
    rest = np.where(valid, n - j[None, :] - ks[:, None], 0)
    log_tail = (log_factorial[n - j][None, :] - log_factorial[rest]
                - log_factorial[n] + log_factorial[n - ks][:, None])
    log_tail = np.where(valid, log_tail, -np.inf)
    cdf = 1.0 - np.exp(log_tail)  # P(best is at least as good as the j-th), (len(ks), n)
    out = np.empty((len(ks), len(quantiles)))
    for qi, q in enumerate(quantiles):
        idx = (cdf < q - 1e-12).sum(1)  # first j with cdf >= q
        out[:, qi] = ordered[np.minimum(idx, n - 1)]
    return out


# ---------------------------------------------------------------------------------------------
# Synthetic run directories in the Parquet results schema (version 1), for tests and the bench.
# ---------------------------------------------------------------------------------------------

BenefitFn = Callable[[str, float, tuple[float, ...], int], float]


def _stable_hash(*parts: object) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def write_synthetic_run(run_dir: str | Path, *, tasks: tuple[str, ...] = ("0", "1", "2", "3"),
                        seeds: int = 5, alphas: tuple[float, ...] = (0.01, 0.1, 1.0),
                        lambdas: tuple[tuple[float, ...], ...] | None = None, hard: bool = True,
                        soft_alpha_zero: bool = False, widths: tuple[int, ...] = (64,),
                        benefit: dict[str, float] | BenefitFn | None = None, noise: float = 1.0,
                        pair_noise: float | None = None,
                        iterations: int = 10, early_stop_fraction: float = 0.2,
                        diverged_fraction: float = 0.05, error_fraction: float = 0.02,
                        running_fraction: float = 0.0, samples: str = "some", files: int = 4,
                        include_baseline: bool = True, rng_seed: int = 0, sweep: str = "synthetic",
                        with_accuracy: bool = True) -> dict:
    """Write a run directory (``metrics/``, ``trials.parquet``, ``sweep.json``) with a planted truth.

    The final FID of a trial on task k is ``base_k + seed_effect[seed, k] - benefit(cfg, k) + e``
    with ``e ~ N(0, noise)`` independent per trial, and it approaches that level over iterations
    along a curve shared by all trials, so comparisons at equal iteration are fair and
    comparisons at different iterations are not. ``benefit`` is in FID units, positive =
    sharing helped; a dict gives a constant per task, a callable gets (mode, alpha, lambdas,
    task_index). Returns the truth: ``{"benefit": {config_id: [per task]}, "trials": n, ...}``.
    """
    run_dir = Path(run_dir)
    rng = np.random.default_rng(rng_seed)
    n_tasks = len(tasks)
    if lambdas is None:
        lambdas = ((1.0,) * n_tasks,)
    if benefit is None:
        benefit = {t: 0.0 for t in tasks}
    benefit_fn: BenefitFn = benefit if callable(benefit) else (lambda m, a, l, k: float(benefit.get(tasks[k], 0.0)))
    arms: list[tuple[str, float, tuple[float, ...]]] = []
    if include_baseline:
        arms.append((INDEPENDENT, 0.0, (1.0,) * n_tasks))
    soft_alphas = ((0.0,) if soft_alpha_zero else ()) + tuple(alphas)
    arms += [(SOFT, a, lam) for a in soft_alphas for lam in lambdas]
    if hard:
        arms += [(HARD, 0.0, lam) for lam in lambdas]

    rows = []
    truth: dict[str, list[float]] = {}
    for width in widths:
        for mode, alpha, lam in arms:
            config_id = INDEPENDENT if mode == INDEPENDENT else "c" + _stable_hash(mode, alpha, lam, width)
            planted = [0.0 if mode == INDEPENDENT else benefit_fn(mode, alpha, lam, k) for k in range(n_tasks)]
            truth[config_id] = planted
            for seed in range(seeds):
                rows.append((config_id, mode, alpha, lam, width, seed, planted))
    n_trials = len(rows)
    base_level = 20.0 + 10.0 * np.arange(n_tasks)
    seed_effect = rng.normal(0.0, 5.0, size=(seeds, len(widths), n_tasks))
    planted = np.array([r[6] for r in rows])  # (T, K)
    seed_idx = np.array([r[5] for r in rows])
    width_idx = np.array([widths.index(r[4]) for r in rows])
    trial_noise = rng.normal(0.0, noise if pair_noise is None else pair_noise, size=(n_trials, n_tasks))
    level = base_level + seed_effect[seed_idx, width_idx] - planted + trial_noise  # final fid, (T, K)
    its = np.arange(1, iterations + 1)
    curve = 40.0 * np.exp(-its / 3.0)  # shared approach to the final level
    fid = level[:, None, :] + curve[None, :, None]  # (T, I, K)

    status = np.full(n_trials, TERMINATED, dtype=object)
    done = np.full(n_trials, iterations)
    u = rng.random(n_trials)
    is_base = np.array([r[1] == INDEPENDENT for r in rows])
    early = u < early_stop_fraction
    done[early] = rng.integers(1, iterations, size=early.sum()) if iterations > 1 else 1
    cut = early_stop_fraction
    for name, frac in ((DIVERGED, diverged_fraction), (ERROR, error_fraction), (RUNNING, running_fraction)):
        sel = (u >= cut) & (u < cut + frac) & ~is_base  # baselines are kept clean unless asked
        status[sel] = name
        done[sel] = rng.integers(0, iterations, size=sel.sum()) if name != RUNNING else \
            rng.integers(1, iterations + 1, size=sel.sum())
        cut += frac

    keep = its[None, :] <= done[:, None]  # (T, I)
    t_idx, i_idx = np.nonzero(keep)
    t_rep = np.repeat(t_idx, n_tasks)
    i_rep = np.repeat(i_idx, n_tasks)
    k_rep = np.tile(np.arange(n_tasks), len(t_idx))
    fid_v = fid[t_rep, i_rep, k_rep]
    trial_ids = np.array([f"t{n:06d}_{_stable_hash(sweep, n)[:6]}" for n in range(n_trials)])
    config_ids = np.array([r[0] for r in rows])
    n_rows = len(t_rep)
    metric_cols = {
        "schema_version": pa.array(np.full(n_rows, SCHEMA_VERSION, np.int32)),
        "sweep": pa.array(np.full(n_rows, sweep, dtype=object), pa.string()),
        "trial_id": pa.DictionaryArray.from_arrays(t_rep.astype(np.int32), trial_ids).cast(pa.string()),
        "config_id": pa.DictionaryArray.from_arrays(t_rep.astype(np.int32), config_ids).cast(pa.string()),
        "iteration": pa.array(its[i_rep].astype(np.int32)),
        "step": pa.array(its[i_rep].astype(np.int64) * 100),
        "task": pa.DictionaryArray.from_arrays(k_rep.astype(np.int32), np.array(tasks)).cast(pa.string()),
        "task_index": pa.array(k_rep.astype(np.int32)),
        "fid": pa.array(fid_v),
        "kid": pa.array(fid_v / 1000.0 + rng.normal(0, 1e-4, n_rows)),
        "precision": pa.array(np.clip(1.0 - fid_v / 100.0, 0, 1)),
        "recall": pa.array(np.clip(0.9 - fid_v / 120.0, 0, 1)),
        "accuracy": pa.array(np.clip(1.0 - fid_v / 80.0, 0, 1)) if with_accuracy else pa.nulls(n_rows, pa.float64()),
        "g_loss": pa.array(rng.normal(1.0, 0.1, n_rows)),
        "d_loss": pa.array(rng.normal(1.2, 0.1, n_rows)),
        "time_s": pa.array(its[i_rep] * 2.0),
        "timestamp": pa.array(1.7e9 + its[i_rep] * 2.0),
    }
    table = pa.table(metric_cols).cast(METRICS_SCHEMA)
    metrics_dir = run_dir / METRICS_DIR
    metrics_dir.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, n_rows, files + 1).astype(int)
    for f in range(files):
        pq.write_table(table.slice(bounds[f], bounds[f + 1] - bounds[f]), metrics_dir / f"part-{f:05d}.parquet")
    # a half-written file of a concurrent writer: readers must ignore it
    (metrics_dir / ".tmp-part-99999.parquet").write_bytes(b"PAR1 not a complete file")

    last = np.maximum(done, 1) - 1
    final_fid = fid[np.arange(n_trials), last]  # (T, K)
    samples_dir = run_dir / "samples"
    samples_path = np.full(n_trials, None, dtype=object)
    if samples != "none":
        samples_dir.mkdir(parents=True, exist_ok=True)
        want = np.ones(n_trials, bool) if samples == "all" else (seed_idx == 0) | (np.arange(n_trials) < 50)
        for t in np.flatnonzero(want & (done > 0)):
            path = samples_dir / f"{trial_ids[t]}.npz"
            images = _synthetic_images(n_tasks, 16, quality=1.0 / (1.0 + final_fid[t].mean() / 20.0), seed=int(t))
            np.savez(path, images=images, tasks=np.array(tasks))
            samples_path[t] = str(path)
        # one referenced file that is missing, as after a node loss
        missing = np.flatnonzero(~want)
        if len(missing):
            samples_path[missing[0]] = str(samples_dir / "lost.npz")

    trial_cols: dict[str, object] = {
        "schema_version": np.full(n_trials, SCHEMA_VERSION, np.int32),
        "sweep": np.full(n_trials, sweep, dtype=object),
        "trial_id": trial_ids,
        "config_id": config_ids,
        "baseline_key": np.array(["b" + _stable_hash(r[4], r[5]) for r in rows]),
        "status": status,
        "seed": seed_idx.astype(np.int64),
        "mode": np.array([r[1] for r in rows]),
        "alpha": np.array([r[2] for r in rows], float),
    }
    for k, task in enumerate(tasks):
        trial_cols[f"lambda_{task}"] = np.array([r[3][k] for r in rows], float)
    trial_cols.update({
        "data": np.full(n_trials, "digits:classes=" + ",".join(tasks), dtype=object),
        "samples_per_task": pd.array([None] * n_trials, dtype="Int64"),
        "width": np.array([r[4] for r in rows], np.int64),
        "lr": np.full(n_trials, 1e-3),
        "batch_size": np.full(n_trials, 64, np.int64),
        "gan_loss": np.full(n_trials, "nonsaturating", dtype=object),
        "steps_per_iteration": np.full(n_trials, 100, np.int64),
        "iterations": done.astype(np.int64),
    })
    for k, task in enumerate(tasks):
        trial_cols[f"fid_{task}"] = np.where(done > 0, final_fid[:, k], np.nan)
        trial_cols[f"kid_{task}"] = np.where(done > 0, final_fid[:, k] / 1000.0, np.nan)
    trial_cols.update({
        "fid_mean": np.where(done > 0, final_fid.mean(1), np.nan),
        "kid_mean": np.where(done > 0, final_fid.mean(1) / 1000.0, np.nan),
        "node_ip": np.full(n_trials, "127.0.0.1", dtype=object),
        "hostname": np.full(n_trials, "localhost", dtype=object),
        "cpus": np.full(n_trials, 1.0),
        "gpus": np.full(n_trials, 0.0),
        "time_s": done * 2.0,
        "checkpoint_path": np.full(n_trials, None, dtype=object),
        "samples_path": samples_path,
        "error": np.where(status == ERROR, "RuntimeError: synthetic failure",
                          np.where(status == DIVERGED, "DivergenceError: NaN loss", None)),
    })
    pq.write_table(pa.Table.from_pandas(pd.DataFrame(trial_cols), preserve_index=False), run_dir / TRIALS_FILE)
    (run_dir / SWEEP_FILE).write_text(json.dumps({"name": sweep, "synthetic": True, "seeds": seeds,
                                                    "tasks": list(tasks)}))
    return {"benefit": truth, "trials": n_trials, "metric_rows": n_rows, "tasks": list(tasks)}


def _synthetic_images(n_tasks: int, k: int, quality: float, seed: int, size: int = 16) -> np.ndarray:
    """Blobs per task (task k: a disc at a task-specific place), blurred by noise as quality drops."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1.0)
    out = np.empty((n_tasks, k, 1, size, size), np.float32)
    for t in range(n_tasks):
        cx, cy = 0.3 + 0.4 * (t % 2), 0.3 + 0.4 * ((t // 2) % 2)
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < 0.06).astype(np.float32) * 2 - 1
        noise = rng.normal(0, 1.0 - quality, size=(k, size, size))
        out[t, :, 0] = np.clip(disc[None] + noise, -1, 1)
    return out
