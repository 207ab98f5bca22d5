"""The statistics of the analysis, vectorised numpy (nothing loops over rows): paired benefit and
ΔMTL, Hesterberg-expanded bootstrap and Student-t intervals over seeds, best-of-k budget curves.
Their conventions (direction, denominators, why which interval) are in CONVENTIONS.md."""
from __future__ import annotations

import functools
import math

import numpy as np

from orchestrator.schema import direction

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
