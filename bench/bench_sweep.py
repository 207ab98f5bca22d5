"""Tune overhead on 2 CPUs: a 16-trial sweep of ~5 s trials, one CPU each.

Prints wall time ÷ (sum of trial compute ÷ 2) -- 1.0 would be two perfectly packed cores with
no orchestration cost; the goal is <= 1.3 -- with actor reuse (what the sweep uses) and,
for comparison, without. Trial compute is the training + evaluation time each trial reports
(``time_s``), so process start-up, data loading and Tune's bookkeeping all count as overhead.

    .venv/bin/python bench/bench_sweep.py [--steps 350]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import search_spaces as ss  # noqa: E402
from orchestrator.sweep import Plan, build_parser, build_tuner, start_run  # noqa: E402


def write_space(directory: Path, steps: int) -> str:
    # 4 seeds × (3 shared configurations + the baseline) = 16 trials
    raw = yaml.safe_load((ss.SPACES_DIR / "default.yaml").read_text())
    raw.update(seeds=[0, 1, 2, 3], num_samples=3, iterations=2, steps_per_iteration=steps)
    raw["fixed"]["eval_samples"] = 100
    path = directory / "bench.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def run(space: str, storage: Path, name: str, reuse_actors: bool) -> tuple[float, float, int]:
    plan = Plan(build_parser().parse_args(["--space", space, "--storage", str(storage), "--name", name,
                                           "--cpus-per-trial", "1"]))
    start_run(plan)
    started = time.perf_counter()
    build_tuner(plan, reuse_actors=reuse_actors).fit()
    wall = time.perf_counter() - started
    trials = pd.read_parquet(plan.run_dir / "trials.parquet")
    return wall, float(trials["time_s"].sum()), len(trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=350, help="steps per iteration (2 iterations per trial)")
    args = parser.parse_args()
    import ray

    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        os.environ.setdefault("MTGAN_CACHE", str(Path(tmp) / "cache"))
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        space = write_space(Path(tmp), args.steps)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            # warm-up: trains and caches the metrics classifier so neither run pays for it
            from trainables.data import load_tasks
            from trainables.metrics import TaskMetrics

            spec = ss.load_space(space)
            TaskMetrics(load_tasks(spec.data, samples_per_task=spec.fixed["samples_per_task"]))
            rows = []
            for reuse in (True, False):
                wall, compute, n = run(space, Path(tmp) / "results", f"reuse-{reuse}", reuse)
                rows.append((reuse, n, wall, compute / n, wall / (compute / 2)))
        finally:
            ray.shutdown()
    print(f"{'reuse_actors':>12} {'trials':>6} {'wall s':>7} {'trial s':>7} {'ratio':>6}  (goal <= 1.3)")
    for reuse, n, wall, per_trial, ratio in rows:
        print(f"{str(reuse):>12} {n:>6} {wall:>7.1f} {per_trial:>7.2f} {ratio:>6.2f}")


if __name__ == "__main__":
    main()
