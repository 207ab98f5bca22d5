"""Planted-truth tests of the primary family's estimators (orchestrator/analysis/inference.py).

Every simulation is vectorised over replications: R sweeps of 4 tasks x S seeds x (B baselines +
C shared configurations), log-metric noise SD 1 (lognormal), optionally 10% collapsed trials.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from orchestrator.analysis.inference import (
    COPY_NN_RATIO, alpha_curve, best_configuration, copies, effect_log_ratio, family_verdict_codes,
    exploratory_test, family_tests, holm, log_benefit, metric_change_percent, obrien_fleming_bounds,
    pooled_per_seed, power, power_statement, seeds_needed, sequential_verdicts, signflip_interval, signflip_p,
    t_stats, z_of_p,
)
from orchestrator.testing import simulate_lognormal_metric
from search_spaces import dunnett_baselines

TASKS, SEEDS, BASELINES, CONFIGS = 4, 8, 2, 6
simulate_fid = simulate_lognormal_metric  # lognormal FIDs around 3, optionally 10% collapsed (30x worse)


def family_verdicts(base: np.ndarray, shared: np.ndarray, alpha: float = 0.05, test: str = "t") -> np.ndarray:
    """(R, tasks, S, B), (R, tasks, S, C) -> (R, tasks) verdict codes of the primary family."""
    return family_verdict_codes(pooled_per_seed(log_benefit(base, shared)), alpha, test)


@pytest.mark.parametrize("test", ["t", "signflip"])
@pytest.mark.parametrize("collapsed", [0.0, 0.1], ids=["lognormal", "10pct-collapsed"])
def test_family_wise_false_verdicts_stay_at_or_below_5_percent_under_the_null(collapsed: float, test: str) -> None:
    rng = np.random.default_rng(1 if collapsed else 2)
    reps = 4000
    base = simulate_fid(rng, (reps, TASKS, SEEDS, BASELINES), collapsed)
    shared = simulate_fid(rng, (reps, TASKS, SEEDS, CONFIGS), collapsed)
    codes = family_verdicts(base, shared, test=test)
    rate = np.mean(np.any(codes != 0, axis=1))
    # 4000 replications: Monte Carlo SE ~0.0035; 5% + 1.65 SE
    assert rate <= 0.056, rate
    assert rate >= 0.01, rate  # and the test is not vacuous (never rejecting would pass the line above)


def test_a_planted_effect_is_found_at_the_designed_power() -> None:
    rng = np.random.default_rng(3)
    noise = 0.3  # log SD of a trial's FID (SD 1 would need ~800 seeds for 10%: too slow to simulate)
    # per-seed SD of the pooled log ratio with B baselines and C configurations: noise sqrt(1/B + 1/C)
    sd = noise * math.sqrt(1 / BASELINES + 1 / CONFIGS)
    seeds = seeds_needed(sd, 0.10, 0.05 / TASKS)
    assert power(seeds - 1, sd, effect_log_ratio(0.10), 0.05 / TASKS) < 0.8 <= \
        power(seeds, sd, effect_log_ratio(0.10), 0.05 / TASKS)
    reps = 3000
    base = simulate_fid(rng, (reps, TASKS, seeds, BASELINES), sd=noise)
    shared = simulate_fid(rng, (reps, TASKS, seeds, CONFIGS), sd=noise)
    shared[:, 0] /= 1.10  # task 0: sharing lowers FID by a factor 1.1
    shared[:, 1] *= 1.10  # task 1: sharing raises it by 10%
    codes = family_verdicts(base, shared)
    assert np.mean(codes[:, 0] == 1) >= 0.78, np.mean(codes[:, 0] == 1)
    assert np.mean(codes[:, 1] == -1) >= 0.78, np.mean(codes[:, 1] == -1)
    assert np.mean(codes[:, 0] == -1) < 0.001  # no sign errors
    # and the power statement a report prints gives the same number for the measured noise
    measured = family_tests({f"t{i}": pooled_per_seed(log_benefit(base[0, i], shared[0, i]))
                             for i in range(TASKS)})
    statement = power_statement(measured)
    assert statement["t2"][0.10] == seeds_needed(measured[2].sd, 0.10, 0.05 / TASKS)
    assert statement["t2"][0.05] > 3 * statement["t2"][0.10]  # half the effect: ~4x the seeds


def test_the_signflip_test_finds_a_planted_effect_and_its_interval_agrees_with_its_verdict() -> None:
    rng = np.random.default_rng(8)
    noise = 0.1  # a few seeds suffice (exact sign flips: all 2^(n-1) of them)
    sd = noise * math.sqrt(1 / BASELINES + 1 / CONFIGS)
    seeds = seeds_needed(sd, 0.10, 0.05 / TASKS)  # the t test's design (80% power)
    assert seeds <= 16
    reps = 2000
    base = simulate_fid(rng, (reps, TASKS, seeds, BASELINES), sd=noise)
    shared = simulate_fid(rng, (reps, TASKS, seeds, CONFIGS), sd=noise)
    shared[:, 0] /= 1.10
    shared[:, 1] *= 1.10
    codes = family_verdicts(base, shared, test="signflip")
    # no normality assumed, a little less power than t at the t's design
    assert np.mean(codes[:, 0] == 1) >= 0.7, np.mean(codes[:, 0] == 1)
    assert np.mean(codes[:, 1] == -1) >= 0.7, np.mean(codes[:, 1] == -1)
    assert np.mean(codes[:, 0] == -1) < 0.001
    # exact: 2 seeds of opposite sign and equal size sit at p 1; 8 positive seeds at 2/2^8
    assert signflip_p(np.array([1.0, -1.0])) == 1.0
    assert signflip_p(np.full(8, 0.3)) == pytest.approx(2 / 2 ** 8)
    assert signflip_p(np.array([0.2, np.nan, 0.5])) == pytest.approx(0.5)  # a missing seed flips nothing
    for i in range(20):
        per_seed = {f"t{k}": pooled_per_seed(log_benefit(base[i, k], shared[i, k])) for k in range(TASKS)}
        for t in family_tests(per_seed, test="signflip"):
            assert (t.ci_low > 0 or t.ci_high < 0) == (t.verdict != "unclear"), t
            assert t.ci_low < t.estimate < t.ci_high
    # too few seeds for the level: the smallest p is 2^(1-n), the interval is unbounded
    assert signflip_interval(np.array([0.5, 0.6, 0.7]), 0.05) == (-math.inf, math.inf)


def test_the_confirmed_verdict_is_unbiased_when_the_best_is_picked_from_null_configurations() -> None:
    rng = np.random.default_rng(4)
    reps, configs = 4000, 10
    explore = log_benefit(simulate_fid(rng, (reps, TASKS, SEEDS, BASELINES)),
                          simulate_fid(rng, (reps, TASKS, SEEDS, configs)))
    best = best_configuration(explore)  # (reps, TASKS)
    picked = np.take_along_axis(explore, best[..., None, None], axis=-1)[..., 0]  # (reps, TASKS, S)
    explored_mean = np.nanmean(picked, axis=-1)
    assert explored_mean.mean() > 0.4  # the winner's curse on the exploration seeds
    # fresh seeds of the chosen configuration (null: same distribution whatever was chosen)
    confirm = log_benefit(simulate_fid(rng, (reps, TASKS, SEEDS, BASELINES)),
                          simulate_fid(rng, (reps, TASKS, SEEDS, 1)))[..., 0]
    mean, se, _, p = t_stats(confirm)
    assert abs(mean.mean()) < 3 * mean.std() / math.sqrt(mean.size)
    rejected, _ = holm(p)
    assert np.mean(rejected.any(axis=1)) <= 0.056
    # the public wrapper labels these verdicts "confirmed"; the exploration's pick stays exploratory
    tests = family_tests({f"t{i}": confirm[0, i] for i in range(TASKS)}, evidence="confirmed")
    assert {t.evidence for t in tests} == {"confirmed"}
    assert exploratory_test("best", picked[0, 0]).verdict == "unclear"


def test_holm_levels_make_intervals_agree_with_verdicts() -> None:
    rejected, levels = holm(np.array([0.01, 0.04, 0.03, 0.005]))
    # sorted 0.005 <= .05/4, 0.01 <= .05/3, 0.03 > .05/2: stop
    assert rejected.tolist() == [True, False, False, True]
    assert levels.tolist() == pytest.approx([0.05 / 3, 0.025, 0.025, 0.0125])
    rng = np.random.default_rng(5)
    per_seed = {f"t{i}": rng.normal(0.5 * (i - 1), 1.0, 10) for i in range(4)}
    for t in family_tests(per_seed):
        excludes_zero = t.ci_low > 0 or t.ci_high < 0
        assert excludes_zero == (t.verdict != "unclear")
        assert t.verdict == ("unclear" if not excludes_zero else "gain" if t.ci_low > 0 else "negative_transfer")
        assert t.p <= t.level if t.verdict != "unclear" else t.p > t.level
    # one seed: no test, unclear
    lone = family_tests({"a": np.array([0.3]), "b": np.array([0.1, 0.2, 0.3])})
    assert lone[0].verdict == "unclear" and math.isnan(lone[0].ci_low)


def test_log_benefit_geometric_baseline_and_missing_trials() -> None:
    y = log_benefit(np.array([[2.0, 8.0], [4.0, np.inf]]), np.array([[2.0, 8.0], [2.0, 0.0]]))
    assert y[0].tolist() == pytest.approx([math.log(2), math.log(0.5)])  # geometric mean 4
    assert y[1, 0] == pytest.approx(math.log(2)) and math.isnan(y[1, 1])  # a diverged baseline is skipped
    assert metric_change_percent(math.log(1 / 1.12)) == pytest.approx(12.0)
    assert [dunnett_baselines(k) for k in (1, 3, 6, 9, 30)] == [1, 2, 2, 3, 3]


def test_obrien_fleming_bounds_match_published_values() -> None:
    # Lan-DeMets O'Brien-Fleming, two-sided 0.05, equally spaced looks (Jennison & Turnbull; gsDesign)
    assert obrien_fleming_bounds([0.5, 1.0]).tolist() == pytest.approx([2.963, 1.969], abs=0.002)
    five = obrien_fleming_bounds(np.arange(1, 6) / 5)
    assert five.tolist() == pytest.approx([4.877, 3.357, 2.680, 2.290, 2.031], abs=0.003)
    assert obrien_fleming_bounds([1.0])[0] == pytest.approx(stats.norm.isf(0.025))
    with pytest.raises(ValueError, match="increase"):
        obrien_fleming_bounds([0.5, 0.5])


def test_adding_seeds_in_blocks_keeps_the_family_wise_error_and_stops_early_on_a_real_effect() -> None:
    rng = np.random.default_rng(6)
    blocks, block, reps = 4, 8, 2000
    fractions = list(np.arange(1, blocks + 1) / blocks)
    bounds = obrien_fleming_bounds(fractions, 0.05 / TASKS)
    for planted in (0.0, 0.7):
        y = rng.normal(0, 1, (reps, TASKS, blocks * block))
        y[:, 0] += planted
        first_crossing = np.full((reps, TASKS), blocks)
        sign = np.zeros((reps, TASKS))
        for look in range(blocks):
            mean, _, _, p = t_stats(y[..., :(look + 1) * block])
            crossed = (z_of_p(p) >= bounds[look]) & (first_crossing == blocks)
            first_crossing[crossed], sign[crossed] = look, np.sign(mean[crossed])
        if planted == 0:
            assert np.mean((first_crossing < blocks).any(axis=1)) <= 0.056
        else:
            assert np.mean(sign[:, 0] == 1) >= 0.75
            assert np.mean(first_crossing[:, 0] < blocks - 1) >= 0.4  # often decided before the cap
    # the per-look wrapper a sweep calls applies the same boundary
    one = {f"t{i}": y[0, i, :2 * block] for i in range(TASKS)}
    out = sequential_verdicts(one, 1, fractions)
    _, _, _, p = t_stats(np.stack(list(one.values())))
    assert [v != "unclear" for v in out.values()] == list(z_of_p(p) >= bounds[1])


def test_alpha_curve_band_covers_a_planted_curve() -> None:
    rng = np.random.default_rng(7)
    alphas = np.repeat(10.0 ** np.array([-3, -2, -1, 0, 1]), 12)
    seeds = np.tile(np.arange(12), 5)
    truth = lambda x: 0.1 - 0.04 * (x + 1) ** 2  # noqa: E731 -- best at α = 0.1
    covered = []
    for _ in range(200):
        seed_effect = rng.normal(0, 0.3, 12)[seeds]  # a seed's shared baselines move all its pairs
        y = truth(np.log10(alphas)) + seed_effect + rng.normal(0, 0.3, len(alphas))
        curve = alpha_curve(alphas, y, seeds, points=5)
        assert curve.degree == 2 and curve.n_seeds == 12
        covered.append((curve.low <= truth(curve.log10_alpha)) & (truth(curve.log10_alpha) <= curve.high))
    assert np.mean(covered) >= 0.9
    assert alpha_curve(np.full(6, 0.1), np.zeros(6), np.arange(6)) is None  # one α: no curve


def test_copying_flag() -> None:
    assert copies(np.array([0.2, 0.3, 0.9]))
    assert not copies(np.array([0.9, 1.1, COPY_NN_RATIO, np.nan]))
    assert not copies(np.array([np.nan]))
