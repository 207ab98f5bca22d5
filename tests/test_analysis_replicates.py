"""Dunnett allocation in the analysis: a seed's independent baseline replicates are averaged into
its baseline (synthetic runs with a planted truth), which lowers the per-seed noise as 1/r + 1/C."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator import analysis, testing

CLEAN = dict(early_stop_fraction=0, diverged_fraction=0, error_fraction=0, samples="none", iterations=2)


def _final(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / "trials.parquet")


def test_the_baseline_is_the_mean_of_the_seeds_replicates(tmp_path: Path) -> None:
    run = tmp_path / "replicates"
    testing.write_synthetic_run(run, seeds=5, alphas=(0.1, 1.0), baselines_per_seed=3, rng_seed=7,
                                benefit={"0": 2.0}, **CLEAN)
    result = analysis.analyze(analysis.load_runs([run], "fid"), resamples=50)
    trials = _final(run)
    assert sorted(trials.loc[trials["mode"] == "independent", "replicate"].value_counts().to_dict().items()) == \
        [(0, 5), (1, 5), (2, 5)]
    # nothing left out: three replicates of a key are not duplicates
    reasons = dict(zip(result.excluded["reason"], result.excluded["independent"]))
    assert not any(r.startswith("duplicate") for r in reasons)
    for k, task in enumerate(result.tasks):
        base = trials[trials["mode"] == "independent"].groupby("seed")[f"fid_{task}"]
        shared = trials[trials["mode"] != "independent"]
        geometric = np.log(base.apply(lambda v: np.exp(np.log(v).mean())))
        y = geometric.reindex(shared["seed"]).to_numpy() - np.log(shared[f"fid_{task}"].to_numpy())
        per_seed = pd.Series(y).groupby(shared["seed"].to_numpy()).mean()
        # the primary family's per-seed log ratios use the geometric mean of the three replicates
        assert np.sort(result.answer.regimes[0].per_seed[task]) == pytest.approx(np.sort(per_seed.to_numpy()))
        # and the paired FID differences (configs.csv, ΔMTL) their arithmetic mean
        pairs = result.pairs.assign(benefit=result.benefit[:, k])
        expected = (base.mean().reindex(trials.loc[pairs["shared"], "seed"]).to_numpy()
                    - trials.loc[pairs["shared"], f"fid_{task}"].to_numpy())
        assert pairs["benefit"].to_numpy() == pytest.approx(expected)
    assert result.answer.regimes[0].tests[0].verdict == "gain"


def test_replicates_lower_the_per_seed_noise_as_dunnett_allocation_says(tmp_path: Path) -> None:
    """Per-seed pooled log ratio with r baselines and C shared configurations: variance ∝ 1/r + 1/C
    (trial noise independent, seed effects cancel); C = 4 here: r = 3 gives SD ratio √(7/15) ≈ 0.68."""
    sd = {}
    for r in (1, 3):
        run = tmp_path / f"r{r}"
        testing.write_synthetic_run(run, seeds=150, alphas=(0.01, 0.1, 1.0), baselines_per_seed=r, rng_seed=11,
                                    pair_noise=2.0, **CLEAN)
        result = analysis.analyze(analysis.load_runs([run], "fid"), resamples=20)
        per_seed = np.stack(list(result.answer.regimes[0].per_seed.values()))  # (tasks, seeds)
        assert per_seed.shape == (4, 150)
        sd[r] = per_seed.std(axis=1, ddof=1)
    ratio = sd[3] / sd[1]
    expected = math.sqrt((1 / 3 + 1 / 4) / (1 + 1 / 4))
    # each SD from 150 seeds: ~6% relative error, ~0.06 on the ratio; averaged over 4 tasks ~0.03
    assert ratio.mean() == pytest.approx(expected, abs=0.08), ratio
    assert (ratio < 0.9).all(), ratio
