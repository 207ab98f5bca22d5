"""Statistics of the sharing analysis against known truths (pure numpy, no files)."""
from __future__ import annotations

import numpy as np
import pytest

from orchestrator.analysis import stats


def test_benefit_sign_is_positive_when_sharing_helps() -> None:
    # fid lower is better: shared 10 vs baseline 12 -> benefit +2
    assert stats.paired_benefit(np.array([10.0]), np.array([12.0]), "fid")[0] == pytest.approx(2.0)
    # precision higher is better: shared 0.7 vs baseline 0.6 -> +0.1
    assert stats.paired_benefit(np.array([0.7]), np.array([0.6]), "precision")[0] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown metric"):
        stats.direction("loss")


def test_delta_mtl_hand_computed() -> None:
    # fid: task A 20 -> 15 (25% better), task B 40 -> 44 (10% worse): ΔMTL = (25 - 10) / 2 = 7.5
    shared = np.array([[15.0, 44.0]])
    base = np.array([[20.0, 40.0]])
    assert stats.delta_mtl(shared, base, "fid")[0] == pytest.approx(7.5)
    # recall (higher is better): 0.5 -> 0.6 (+20%), 0.8 -> 0.6 (-25%): ΔMTL = -2.5
    assert stats.delta_mtl(np.array([[0.6, 0.6]]), np.array([[0.5, 0.8]]), "recall")[0] == pytest.approx(-2.5)
    # a zero baseline cannot be a relative reference: that task drops out, the other one counts
    assert stats.delta_mtl(np.array([[1.0, 15.0]]), np.array([[0.0, 20.0]]), "kid")[0] == pytest.approx(25.0)


def test_relative_benefit_with_a_per_task_scale() -> None:
    # kid: the pair's baseline is ~0 (1e-6), the task's scale 0.02: 0.001 worse = -5%, not -1e5 %
    shared, base = np.array([[1e-6 + 0.001, 0.027]]), np.array([[1e-6, 0.03]])
    rel = stats.relative_benefit_pct(shared, base, "kid", scale=np.array([0.02, 0.03]))
    assert rel[0] == pytest.approx([-5.0, 10.0])
    assert abs(stats.relative_benefit_pct(shared, base, "kid")[0, 0]) > 1e5  # the unstable per-pair version
    assert np.isnan(stats.relative_benefit_pct(shared, base, "kid", scale=np.array([-0.01, 0.03]))[0, 0])


def test_bootstrap_recovers_planted_benefit_and_covers_it() -> None:
    """200 independent draws of 8 seeds each, planted mean 2, sd 1.5 per pair (skewed and not)."""
    rng = np.random.default_rng(123)
    draws, seeds, truth = 200, 8, 2.0
    normal = truth + rng.normal(0, 1.5, (draws, seeds))
    skewed = truth + 1.5 * (rng.gamma(2.0, 1.0, (draws, seeds)) - 2.0) / np.sqrt(2.0)
    values = np.stack([normal, skewed], -1).reshape(draws * seeds, 2)
    group = np.repeat(np.arange(draws), seeds)
    res = stats.bootstrap_mean_ci(values, group, draws, resamples=2000, seed=0)
    assert (np.sign(res["mean"]) == 1).mean() >= 0.9
    covered = (res["lo"] <= truth) & (truth <= res["hi"])
    assert covered.mean(0).min() >= 0.90, covered.mean(0)
    assert (res["n"] == seeds).all()


def test_bootstrap_zero_effect_rarely_significant() -> None:
    rng = np.random.default_rng(7)
    draws, seeds = 600, 8
    values = rng.normal(0, 1.0, draws * seeds)
    res = stats.bootstrap_mean_ci(values, np.repeat(np.arange(draws), seeds), draws, seed=1)
    significant = (res["lo"] > 0) | (res["hi"] < 0)
    assert significant.mean() <= 0.08, significant.mean()


def test_bootstrap_single_unit_is_a_point_estimate_and_is_reproducible() -> None:
    values = np.array([1.0, 2.0, 3.0, 5.0])
    group = np.array([0, 1, 1, 1])
    a = stats.bootstrap_mean_ci(values, group, 2, seed=3)
    b = stats.bootstrap_mean_ci(values, group, 2, seed=3)
    assert a["mean"][0] == 1.0 and np.isnan(a["lo"][0]) and np.isnan(a["hi"][0])
    assert a["mean"][1] == pytest.approx(10 / 3)
    assert 2.0 <= a["lo"][1] < a["mean"][1] < a["hi"][1] <= 5.0
    assert a["lo"][1] == b["lo"][1] and a["hi"][1] == b["hi"][1]


def test_clustered_bootstrap_averages_within_cluster_first() -> None:
    # two pairs share baseline 0, one pair uses baseline 1: units are the baselines
    values = np.array([1.0, 3.0, 10.0])
    res = stats.clustered_bootstrap(values, np.zeros(3, np.int64), np.array([0, 0, 1]), 1, seed=0)
    assert res["n"][0] == 2
    assert res["mean"][0] == pytest.approx((2.0 + 10.0) / 2)


def test_t_interval_matches_scipy_per_group_and_column() -> None:
    from scipy import stats as sps

    rng = np.random.default_rng(4)
    values = rng.normal(1.0, 2.0, (13, 2))
    values[3, 1] = np.nan  # column 1 of group 0 has one unit less
    group = np.array([0] * 8 + [1] * 4 + [2])
    res = stats.t_interval(values, group, 3, level=1 - 0.05 / 6)
    for g in (0, 1):
        for k in (0, 1):
            x = values[group == g, k]
            x = x[np.isfinite(x)]
            lo, hi = sps.t.interval(1 - 0.05 / 6, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
            assert (res["lo"][g, k], res["hi"][g, k]) == pytest.approx((lo, hi), rel=1e-9)
    assert np.isnan(res["lo"][2]).all() and res["mean"][2] == pytest.approx(values[12])  # one unit
    assert list(res["n"]) == [8, 4, 1]


def test_expanded_quantiles_widen_for_small_n() -> None:
    lo3, hi3 = stats.expanded_quantiles(3)
    lo30, _ = stats.expanded_quantiles(30)
    assert lo3 < lo30 < 0.025 and hi3 == pytest.approx(1 - lo3)
    assert np.isnan(stats.expanded_quantiles(1)[0])


def test_best_of_k_matches_brute_force_resampling() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(30, 5, 12)
    scores[[2, 7]] = np.nan  # two diverged trials: draws that yield nothing
    ks = np.array([1, 2, 5, 12])
    # quantile levels away from the steps of the exact CDF, so Monte Carlo noise cannot flip them
    levels = (0.13, 0.47, 0.88)
    exact = stats.best_of_k(scores, lower_is_better=True, ks=ks, quantiles=levels)
    filled = np.where(np.isfinite(scores), scores, np.inf)
    perms = np.argsort(rng.random((20000, len(scores))), axis=1)
    best = np.minimum.accumulate(filled[perms], axis=1)[:, ks - 1]
    brute = np.quantile(best, levels, axis=0, method="inverted_cdf").T
    assert np.allclose(exact[np.isfinite(exact)], brute[np.isfinite(exact)], atol=1e-9)
    assert exact[-1, 1] == pytest.approx(np.nanmin(scores))  # all 12 drawn: the best of all
    # higher-is-better picks the maximum
    assert stats.best_of_k(np.array([0.2, 0.9, 0.5]), False, np.array([3]))[0, 1] == pytest.approx(0.9)


def test_student_t_quantile_matches_scipy() -> None:
    from scipy import stats as sps  # only the test needs scipy.stats: the analysis avoids its import cost

    for df in (1, 2, 3, 4, 5, 7, 10, 29, 30, 99, 250):
        for p in (0.9, 0.975, 0.995):
            assert stats.student_t_quantile(p, df) == pytest.approx(sps.t.ppf(p, df), rel=1e-7)
    assert stats.normal_cdf(-1.96) == pytest.approx(sps.norm.cdf(-1.96), rel=1e-12)
