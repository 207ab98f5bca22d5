"""Inference for the primary question, in plain numpy/scipy: does sharing help each task?

The unit is the seed. A trial's metric is a positive quality number where lower is better (FID);
the benefit of a shared arm over the baseline at the same seed is the log ratio

    y = log(metric_base / metric_shared)        (> 0: sharing helps; a ratio, not a difference,
                                                 because seed noise is multiplicative and skewed)

with ``metric_base`` the geometric mean of the seed's independent baselines (a sweep's
``baselines_per_seed``, by design 2–3: :func:`search_spaces.dunnett_baselines`). A seed's pooled
benefit for a task is the mean of y over the seed's shared configurations.

* Primary family (declared up front): one hypothesis per task, "the pooled benefit is 0", tested
  with Student t over seeds and Holm's step-down over the tasks at family-wise level ``alpha``.
  Each task's interval is drawn at the level Holm used at its step (the level at which it was
  rejected, or the level at which Holm stopped), so a verdict is ``gain`` / ``negative_transfer``
  exactly when its interval excludes 0 (:func:`family_tests`).
* The same family with an exact within-seed permutation test instead of t (``test="signflip"``):
  under "sharing does nothing" a seed's shared and baseline labels are exchangeable, so its log
  ratio is as likely +y as -y; the p value counts the sign flips (all 2^n for up to
  EXACT_SIGNFLIP_SEEDS seeds, else SIGNFLIP_DRAWS random ones) whose |Σ y| reaches the observed,
  and the interval inverts the test (:func:`signflip_p`, :func:`signflip_interval`). It assumes
  no normality; with n seeds its smallest p is 2^(1-n).
* Explore → confirm: a configuration picked as the best on some seeds has an optimistic interval
  on those seeds (``exploratory``); re-run on fresh seeds, its verdict from those seeds alone is
  ``confirmed`` and unbiased (:func:`family_tests` with ``evidence="confirmed"``).
* Benefit as a function of log α: a polynomial in log10 α fitted to every (configuration, seed)
  log ratio, with a seed-clustered sandwich covariance and a pointwise t band (:func:`alpha_curve`).
* Adding seeds in blocks: Lan–DeMets O'Brien–Fleming alpha spending (:func:`obrien_fleming_bounds`,
  :func:`sequential_verdicts`), each task at ``alpha / n_tasks`` (Bonferroni, so the family's
  error stays below ``alpha`` however many looks end early).
* Power: seeds needed for a 5% or 10% effect at the noise measured (noncentral t,
  :func:`seeds_needed`).

Verdict words: ``gain`` (sharing lowers the metric), ``negative_transfer`` (it raises it),
``unclear``. Nothing here reads files or knows about Ray, Tune or Parquet.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.optimize import brentq

VERDICTS = ("gain", "negative_transfer", "unclear")
EVIDENCE = ("pooled", "confirmed", "exploratory")
FAMILY_ALPHA = 0.05
DESIGN_POWER = 0.8
EFFECTS = (0.05, 0.10)  # the effects the power statement sizes seeds for (5% and 10% of the metric)
COPY_NN_RATIO = 0.5  # samples closer to the training images than half the real images' distance copy
MAX_SEEDS = 10_000  # seeds_needed gives up (returns this) beyond it
TESTS = ("t", "signflip")
EXACT_SIGNFLIP_SEEDS = 16  # all 2^n sign flips up to here (65,536), random ones beyond
SIGNFLIP_DRAWS = 9_999


# ----------------------------------------------------------------------------- the log ratio

def log_benefit(baseline: np.ndarray, shared: np.ndarray) -> np.ndarray:
    """log(geometric mean of a seed's baselines / shared metric), vectorised over leading axes.

    baseline: (..., B) metrics of a seed's B independent baseline trials; shared: (..., C) metrics
    of the seed's C shared configurations. Returns (..., C). A non-positive or non-finite metric (a
    diverged trial, a KID below 0) counts as missing: NaN, which the tests below skip (and the
    caller should count).
    """
    base, shared = np.asarray(baseline, dtype=float), np.asarray(shared, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_base = np.where((base > 0) & np.isfinite(base), np.log(base), np.nan)
        log_shared = np.where((shared > 0) & np.isfinite(shared), np.log(shared), np.nan)
    return _nanmean(log_base)[..., None] - log_shared


def _nanmean(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis skipping NaN; NaN (no warning) where all are missing."""
    counts = np.sum(~np.isnan(values), axis=-1)
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, np.nansum(values, axis=-1) / np.maximum(counts, 1), np.nan)


def pooled_per_seed(y: np.ndarray) -> np.ndarray:
    """(..., S, C) log ratios -> (..., S): the mean over each seed's finite configurations."""
    return _nanmean(np.asarray(y, dtype=float))


def best_configuration(y: np.ndarray) -> np.ndarray:
    """(..., S, C) -> (...,) index of the configuration with the highest mean log ratio over seeds
    (the exploration's pick: its interval on these seeds is optimistic)."""
    means = _nanmean(np.swapaxes(np.asarray(y, dtype=float), -1, -2))
    return np.argmax(np.where(np.isnan(means), -np.inf, means), axis=-1)


def metric_change_percent(log_ratio: float | np.ndarray) -> float | np.ndarray:
    """The shared arm's metric relative to the baseline's, in percent: -10 = 10% lower (better)."""
    return 100.0 * np.expm1(-np.asarray(log_ratio, dtype=float))


# ----------------------------------------------------------------------------- t and Holm, vectorised

def t_stats(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Over the last axis, skipping NaN: mean, standard error, n and the two-sided p of mean = 0.

    n < 2 or a zero spread gives se NaN or 0 and p NaN (no test)."""
    y = np.asarray(y, dtype=float)
    n = np.sum(~np.isnan(y), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(y, axis=-1) / n
        var = np.nansum((y - mean[..., None]) ** 2, axis=-1) / (n - 1)
        se = np.sqrt(var / n)
        t = mean / se
        p = 2 * stats.t.sf(np.abs(t), np.maximum(n - 1, 1))
    p = np.where((n >= 2) & (se > 0), p, np.nan)
    mean = np.where(n > 0, mean, np.nan)
    return mean, np.where(n >= 2, se, np.nan), n, p


def holm(p: np.ndarray, alpha: float = FAMILY_ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down over the last axis: (rejected, level), vectorised over leading axes.

    ``level`` is each hypothesis' two-sided test level: alpha/(m - rank) for those rejected, and
    for the rest the level at which the procedure stopped (so p <= level exactly when rejected,
    and a t interval at that level excludes 0 exactly then). NaN p is never rejected.
    """
    p = np.asarray(p, dtype=float)
    m = p.shape[-1]
    order = np.argsort(np.where(np.isnan(p), np.inf, p), axis=-1)
    sorted_p = np.take_along_axis(p, order, axis=-1)
    step_levels = alpha / (m - np.arange(m))
    passes = sorted_p <= step_levels  # NaN compares False
    still = np.cumprod(passes, axis=-1).astype(bool)
    n_rejected = still.sum(-1, keepdims=True)
    stop_level = np.where(n_rejected < m, alpha / np.maximum(m - n_rejected, 1), alpha)
    sorted_levels = np.where(still, step_levels, stop_level)
    rejected, levels = np.empty_like(still), np.empty_like(sorted_levels)
    np.put_along_axis(rejected, order, still, axis=-1)
    np.put_along_axis(levels, order, sorted_levels, axis=-1)
    return rejected, levels


def verdict_codes(mean: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    """+1 gain, -1 negative transfer, 0 unclear."""
    return np.where(rejected, np.sign(mean), 0).astype(int)


def family_verdict_codes(per_seed: np.ndarray, alpha: float = FAMILY_ALPHA, test: str = "t") -> np.ndarray:
    """(..., tasks, seeds) per-seed log ratios -> (..., tasks) verdict codes of the primary family
    (Holm over the tasks), vectorised over replications: what :func:`family_tests` decides,
    for simulations."""
    mean, _, n, p = t_stats(per_seed)
    if test == "signflip":
        p = np.where(n >= 2, signflip_p(per_seed), np.nan)
    rejected, _ = holm(p, alpha)
    return verdict_codes(mean, rejected)


# ----------------------------------------------------------------------------- the family

@dataclass(frozen=True)
class Test:
    """One hypothesis of a family: the mean log ratio over seeds and its verdict."""

    name: str
    estimate: float  # mean log(metric_base / metric_shared) over seeds
    ci_low: float
    ci_high: float
    level: float  # two-sided test level the interval is drawn at (confidence 1 - level)
    p: float
    n: int  # seeds
    sd: float  # seed-to-seed SD of the per-seed log ratio
    verdict: str
    evidence: str

    @property
    def change_percent(self) -> tuple[float, float, float]:
        """The shared metric vs the baseline's, in percent (estimate, low, high): FID +12% [+4, +20]."""
        return (float(metric_change_percent(self.estimate)), float(metric_change_percent(self.ci_high)),
                float(metric_change_percent(self.ci_low)))


def family_tests(per_seed: dict[str, np.ndarray], alpha: float = FAMILY_ALPHA,
                 evidence: str = "pooled", test: str = "t") -> list[Test]:
    """One test per name (a task) on its per-seed log ratios, Holm over them; see the module doc.
    ``test``: Student ``t``, or the exact within-seed permutation test ``signflip`` (its p and an
    interval inverted from it at Holm's level, so a verdict still comes exactly when the interval
    excludes 0)."""
    if evidence not in EVIDENCE:
        raise ValueError(f"evidence must be one of {', '.join(EVIDENCE)}, got {evidence!r}")
    if test not in TESTS:
        raise ValueError(f"test must be one of {', '.join(TESTS)}, got {test!r}")
    names = list(per_seed)
    if not names:
        return []
    width = max(len(np.asarray(v)) for v in per_seed.values())
    y = np.full((len(names), max(width, 1)), np.nan)
    for i, name in enumerate(names):
        values = np.asarray(per_seed[name], dtype=float)
        y[i, :len(values)] = values
    mean, se, n, p = t_stats(y)
    if test == "signflip":
        p = np.where(n >= 2, signflip_p(y), np.nan)
    rejected, levels = holm(p, alpha)
    codes = verdict_codes(mean, rejected)
    out = []
    for i, name in enumerate(names):
        if test == "signflip":
            low, high = signflip_interval(y[i], levels[i]) if n[i] >= 2 else (np.nan, np.nan)
        else:
            half = stats.t.ppf(1 - levels[i] / 2, n[i] - 1) * se[i] if n[i] >= 2 else np.nan
            low, high = mean[i] - half, mean[i] + half
        out.append(Test(name, float(mean[i]), float(low), float(high), float(levels[i]),
                        float(p[i]), int(n[i]), float(se[i] * np.sqrt(n[i])) if n[i] >= 2 else float("nan"),
                        {1: "gain", -1: "negative_transfer", 0: "unclear"}[int(codes[i])], evidence))
    return out


def exploratory_test(name: str, y: np.ndarray, alpha: float = FAMILY_ALPHA) -> Test:
    """A selected configuration on the seeds it was selected on: a plain t interval, no verdict
    (it is optimistic: confirm it on fresh seeds)."""
    mean, se, n, p = t_stats(np.asarray(y, dtype=float)[None])
    half = stats.t.ppf(1 - alpha / 2, n[0] - 1) * se[0] if n[0] >= 2 else np.nan
    return Test(name, float(mean[0]), float(mean[0] - half), float(mean[0] + half), alpha, float(p[0]),
                int(n[0]), float(se[0] * np.sqrt(n[0])) if n[0] >= 2 else float("nan"), "unclear",
                "exploratory")


# ----------------------------------------------------------------------------- sign flips

def _sign_flips(n: int, seed: int = 0) -> np.ndarray:
    """(F, n) ±1 sign vectors: all 2^(n-1) with the first sign +1 for n up to EXACT_SIGNFLIP_SEEDS
    (|Σ εy| is the same for ε and -ε, so half of them give the whole distribution; the identity
    is the first row), else the identity and SIGNFLIP_DRAWS random ones."""
    if n <= EXACT_SIGNFLIP_SEEDS:
        bits = (np.arange(2 ** max(n - 1, 0))[:, None] >> np.arange(max(n - 1, 0))[None, :]) & 1
        return np.hstack([np.ones((len(bits), 1)), 1.0 - 2.0 * bits])[:, :n]
    draws = np.random.default_rng(seed).integers(0, 2, (SIGNFLIP_DRAWS, n)) * 2.0 - 1.0
    return np.vstack([np.ones((1, n)), draws])


def signflip_p(y: np.ndarray, seed: int = 0, chunk: int = 4096) -> np.ndarray:
    """Two-sided p of the exact within-seed permutation (sign-flip) test of "the per-seed log
    ratios are symmetric about 0", over the last axis (vectorised over leading axes; NaN seeds
    count as 0, which a flip leaves alone). Exact up to EXACT_SIGNFLIP_SEEDS seeds, else Monte
    Carlo with the identity counted ((1 + hits) / (1 + draws): still a valid p)."""
    y = np.asarray(y, dtype=float)
    values = np.where(np.isnan(y), 0.0, y)
    flat = values.reshape(-1, values.shape[-1])
    flips = _sign_flips(flat.shape[-1], seed)
    observed = np.abs(flat.sum(-1))
    tolerance = 1e-9 * np.maximum(np.abs(flat).sum(-1), 1e-300)
    hits = np.zeros(len(flat))
    for start in range(0, len(flat), chunk):  # (chunk, F) at a time: bounded memory
        block = np.abs(flat[start:start + chunk] @ flips.T)
        hits[start:start + chunk] = (block >= (observed - tolerance)[start:start + chunk, None]).sum(-1)
    return (hits / len(flips)).reshape(values.shape[:-1])


def signflip_interval(y: np.ndarray, level: float, seed: int = 0, steps: int = 60) -> tuple[float, float]:
    """The shifts δ the sign-flip test at ``level`` does not reject for y - δ (the test
    inverted: a 1 - level interval for the centre of symmetry). Each end is found by bisection
    between a rejected and a kept shift; on the side of 0 the bracket has 0 as one end, so the
    interval excludes 0 exactly when the test at δ = 0 rejects. An end is ±inf where no shift is
    rejected (too few seeds for ``level``: the smallest p is 2^(1-n))."""
    y = np.asarray(y, dtype=float)
    y = y[np.isfinite(y)]
    if len(y) < 2:
        return float("nan"), float("nan")
    mean = float(y.mean())
    spread = float(np.ptp(y)) + abs(mean) + 1e-12
    flips = _sign_flips(len(y), seed)

    def kept(delta: float) -> bool:
        shifted = y - delta
        observed = abs(shifted.sum())
        p = np.mean(np.abs(flips @ shifted) >= observed - 1e-9 * np.abs(shifted).sum())
        return bool(p > level)

    def end(direction: float) -> float:
        inside = mean
        if (0.0 - mean) * direction > 0:  # 0 lies on this side: it brackets the end one way or the other
            if not kept(0.0):
                outside = 0.0
            else:
                inside, outside = 0.0, None
        else:
            outside = None
        if outside is None:
            far = inside + direction * spread
            for _ in range(60):
                if not kept(far):
                    break
                far = inside + 2 * (far - inside)
            else:
                return direction * float("inf")
            outside = far
        for _ in range(steps):
            middle = (inside + outside) / 2
            inside, outside = (middle, outside) if kept(middle) else (inside, middle)
        return (inside + outside) / 2  # strictly on the kept side of a rejected 0

    return end(-1.0), end(1.0)


# ----------------------------------------------------------------------------- power

def power(n: int | np.ndarray, sd: float, effect: float, alpha: float) -> np.ndarray:
    """Power of the two-sided one-sample t test at level alpha with n seeds, for a true mean log
    ratio ``effect`` and seed SD ``sd``."""
    n = np.asarray(n, dtype=float)
    df = np.maximum(n - 1, 1)
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = effect * np.sqrt(n) / sd
    with np.errstate(all="ignore"):
        value = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
    # scipy's noncentral t returns NaN far in the tail (large nc): the power there is ~1
    return np.where(np.isnan(value) & (np.abs(nc) > crit), 1.0, value)


def effect_log_ratio(fraction: float) -> float:
    """An effect of ``fraction`` (0.05 = 5%) as a log ratio: the smaller of a 5% gain and a 5%
    loss, log(1 + fraction)."""
    return math.log1p(fraction)


def seeds_needed(sd: float, fraction: float, alpha: float, target: float = DESIGN_POWER) -> int:
    """Fewest seeds whose t test at level ``alpha`` finds an effect of ``fraction`` with power
    ``target`` (MAX_SEEDS if beyond it; NaN sd gives MAX_SEEDS too)."""
    if not (np.isfinite(sd) and sd > 0):
        return MAX_SEEDS if not np.isfinite(sd) else 2
    effect = effect_log_ratio(fraction)
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(target)
    guess = max(2, int((z * sd / effect) ** 2))
    if guess > MAX_SEEDS:
        return MAX_SEEDS
    candidates = np.arange(2, min(MAX_SEEDS, guess + 50) + 1)
    ok = power(candidates, sd, effect, alpha) >= target
    return int(candidates[np.argmax(ok)]) if ok.any() else MAX_SEEDS


def power_statement(tests: list[Test], alpha: float = FAMILY_ALPHA,
                    effects: tuple[float, ...] = EFFECTS) -> dict[str, dict[float, int]]:
    """Per test, the seeds needed for each effect at the measured SD, each test at alpha / m
    (Bonferroni: what Holm guarantees at its first step)."""
    m = max(1, len(tests))
    return {t.name: {e: seeds_needed(t.sd, e, alpha / m) for e in effects} for t in tests}


# ----------------------------------------------------------------------------- log α curve

@dataclass(frozen=True)
class Curve:
    """Benefit (log ratio) vs log10 α: a polynomial fit and a pointwise band."""

    log10_alpha: np.ndarray
    fit: np.ndarray
    low: np.ndarray
    high: np.ndarray
    degree: int
    n_seeds: int


def alpha_curve(alpha: np.ndarray, y: np.ndarray, seed: np.ndarray, points: int = 50,
                confidence: float = 0.95, max_degree: int = 2) -> Curve | None:
    """Fit y ~ polynomial(log10 α) over every finite (configuration, seed) log ratio; the
    covariance is the sandwich clustered by seed (the pairs of one seed share its baselines), the
    band pointwise Student t with (seeds - 1) df. Degree: min(max_degree, distinct α - 1, seeds - 2).
    None when there is too little to fit (under 2 distinct α or 3 seeds)."""
    alpha, y, seed = (np.asarray(a) for a in (alpha, y, seed))
    keep = np.isfinite(y) & np.isfinite(alpha) & (alpha > 0)
    x, y, seed = np.log10(alpha[keep].astype(float)), y[keep].astype(float), seed[keep]
    clusters = np.unique(seed)
    degree = min(max_degree, len(np.unique(x)) - 1, len(clusters) - 2)
    if degree < 1:
        return None
    design = np.vander(x, degree + 1, increasing=True)
    bread = np.linalg.pinv(design.T @ design)
    beta = bread @ design.T @ y
    resid = y - design @ beta
    meat = np.zeros((degree + 1, degree + 1))
    for c in clusters:
        score = design[seed == c].T @ resid[seed == c]
        meat += np.outer(score, score)
    g = len(clusters)
    cov = bread @ meat @ bread * g / (g - 1)
    grid = np.linspace(x.min(), x.max(), points)
    at = np.vander(grid, degree + 1, increasing=True)
    fit = at @ beta
    se = np.sqrt(np.einsum("ij,jk,ik->i", at, cov, at))
    half = stats.t.ppf(0.5 + confidence / 2, g - 1) * se
    return Curve(grid, fit, fit - half, fit + half, degree, g)


# ----------------------------------------------------------------------------- group sequential

def obrien_fleming_bounds(fractions: np.ndarray | list[float], alpha: float = FAMILY_ALPHA,
                          grid: int = 2001) -> np.ndarray:
    """Two-sided z boundaries at information fractions 0 < t_1 < ... <= 1 from Lan–DeMets
    O'Brien–Fleming alpha spending, each side spending 2 - 2 Φ(z_{1-alpha/4} / √t) of its
    alpha/2 (gsDesign's sfLDOF for a symmetric two-sided design), found by numerical integration
    of the Brownian motion S(t) = Z(t)√t over the continuation regions."""
    return np.array(_obrien_fleming_bounds(tuple(np.asarray(fractions, dtype=float).ravel().tolist()),
                                           float(alpha), int(grid)))


@functools.lru_cache(maxsize=64)
def _obrien_fleming_bounds(fractions_tuple: tuple[float, ...], alpha: float, grid: int) -> tuple[float, ...]:
    fractions = np.asarray(fractions_tuple, dtype=float)
    if fractions.ndim != 1 or not len(fractions) or np.any(np.diff(fractions) <= 0) \
            or fractions[0] <= 0 or fractions[-1] > 1 + 1e-12:
        raise ValueError(f"information fractions must increase within (0, 1], got {fractions.tolist()}")
    spent = 2 * (2 - 2 * stats.norm.cdf(stats.norm.ppf(1 - alpha / 4) / np.sqrt(fractions)))
    bounds = np.empty(len(fractions))
    # density of S on a grid over the previous continuation region (None before the first look)
    points: np.ndarray | None = None
    density: np.ndarray | None = None
    weights: np.ndarray | None = None
    previous_t, previous_spent = 0.0, 0.0
    for k, t in enumerate(fractions):
        step = t - previous_t
        target = spent[k] - previous_spent

        def crossing(c: float) -> float:
            edge = c * math.sqrt(t)
            if points is None:
                return 2 * stats.norm.sf(edge / math.sqrt(step))
            sd = math.sqrt(step)
            tail = stats.norm.sf((edge - points) / sd) + stats.norm.cdf((-edge - points) / sd)
            return float(np.sum(weights * density * tail))

        bounds[k] = brentq(lambda c: crossing(c) - target, 0.0, 40.0, xtol=1e-10) if target > 0 else np.inf
        edge = bounds[k] * math.sqrt(t) if np.isfinite(bounds[k]) else 40 * math.sqrt(t)
        new_points = np.linspace(-edge, edge, grid)
        new_weights = np.full(grid, new_points[1] - new_points[0])
        new_weights[[0, -1]] /= 2  # trapezoid
        if points is None:
            new_density = stats.norm.pdf(new_points, scale=math.sqrt(step))
        else:
            sd = math.sqrt(step)
            kernel = stats.norm.pdf((new_points[:, None] - points[None, :]) / sd) / sd
            new_density = kernel @ (weights * density)
        points, density, weights = new_points, new_density, new_weights
        previous_t, previous_spent = t, spent[k]
    return tuple(bounds.tolist())


def z_of_p(p: np.ndarray) -> np.ndarray:
    """The |z| of a two-sided p value (to compare a t test with a z boundary)."""
    return stats.norm.isf(np.asarray(p, dtype=float) / 2)


def sequential_verdicts(per_seed: dict[str, np.ndarray], look: int, fractions: list[float],
                        alpha: float = FAMILY_ALPHA) -> dict[str, str]:
    """At look ``look`` (0-based) of a group-sequential design, each task's verdict so far:
    ``gain`` / ``negative_transfer`` once its t test's |z| crosses the O'Brien–Fleming bound at
    alpha / n_tasks, else ``unclear`` (keep adding seeds until the last look)."""
    bounds = obrien_fleming_bounds(fractions, alpha / max(1, len(per_seed)))
    out = {}
    for name, values in per_seed.items():
        mean, _, _, p = t_stats(np.asarray(values, dtype=float))
        crossed = bool(np.isfinite(p) and z_of_p(p) >= bounds[look])
        out[name] = ("gain" if mean > 0 else "negative_transfer") if crossed else "unclear"
    return out


# ----------------------------------------------------------------------------- copying

def copies(nn_ratio: np.ndarray) -> bool:
    """A configuration copies its training images when the median over its seeds of nn_ratio
    (samples' nearest-training distance ÷ unseen real images') is below COPY_NN_RATIO."""
    values = np.asarray(nn_ratio, dtype=float)
    values = values[np.isfinite(values)]
    return bool(len(values) and np.median(values) < COPY_NN_RATIO)
