"""The primary family's calibration at scale (not a test): 4,000 simulated sweeps per scenario.

Each sweep: 4 tasks x S seeds x (B baseline replicates + C shared configurations), trial metrics
lognormal (log SD 1), optionally with 10% collapsed trials (30x worse). Prints, for the Student t
test and the exact within-seed permutation (sign-flip) test on the per-seed log ratio:
  - the family-wise false-verdict rate under the null (goal: <= 5%), with its Monte Carlo SE,
  - the power to find a planted 10% effect on one task at the t test's designed seeds,
and the seconds each took. tests/test_inference.py runs small versions of the same checks.

    .venv/bin/python bench/inference_calibration.py [--sweeps 4000]
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from orchestrator.analysis.inference import (  # noqa: E402
    TESTS, effect_log_ratio, family_verdict_codes, log_benefit, pooled_per_seed, seeds_needed)
from orchestrator.testing import simulate_lognormal_metric  # noqa: E402

TASKS = 4


def per_seed(rng: np.random.Generator, sweeps: int, seeds: int, baselines: int, configs: int, collapsed: float,
             sd: float, planted: float = 0.0) -> np.ndarray:
    base = simulate_lognormal_metric(rng, (sweeps, TASKS, seeds, baselines), collapsed, sd)
    shared = simulate_lognormal_metric(rng, (sweeps, TASKS, seeds, configs), collapsed, sd)
    shared[:, 0] /= math.exp(planted)
    return pooled_per_seed(log_benefit(base, shared))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", type=int, default=4000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{args.sweeps} simulated sweeps per row; {TASKS} tasks, Holm over them at 5%")
    print(f"{'scenario':44s} {'test':9s} {'rate':>7s} {'± SE':>7s} {'seconds':>8s}")
    for seeds, baselines, configs in ((8, 2, 6), (8, 1, 6), (20, 3, 9)):
        for collapsed in (0.0, 0.1):
            y = per_seed(rng, args.sweeps, seeds, baselines, configs, collapsed, 1.0)
            name = (f"null, {seeds} seeds, {baselines} base + {configs} shared, "
                    + ("10% collapsed" if collapsed else "lognormal"))
            for test in TESTS:
                started = time.perf_counter()
                codes = family_verdict_codes(y, test=test)
                rate = float(np.mean(np.any(codes != 0, axis=-1)))
                se = math.sqrt(rate * (1 - rate) / args.sweeps)
                print(f"{name:44s} {test:9s} {rate:7.4f} {se:7.4f} {time.perf_counter() - started:8.2f}")
    # power: a 10% effect on task 0, per-trial log SD 0.3, seeds from the t test's design
    noise, baselines, configs = 0.3, 2, 6
    sd = noise * math.sqrt(1 / baselines + 1 / configs)
    seeds = seeds_needed(sd, 0.10, 0.05 / TASKS)
    y = per_seed(rng, args.sweeps, seeds, baselines, configs, 0.0, noise, effect_log_ratio(0.10))
    for test in TESTS:
        started = time.perf_counter()
        codes = family_verdict_codes(y, test=test)
        name = f"10% effect, {seeds} seeds (t design: 80%)"
        print(f"{name:44s} {test:9s} {np.mean(codes[:, 0] == 1):7.4f} {'':7s} {time.perf_counter() - started:8.2f}")


if __name__ == "__main__":
    main()
