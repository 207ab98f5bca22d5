"""Orchestration overhead of a sweep on 2 CPUs (a benchmark, not a test).

A 16-trial sweep of ~5 s trials on 2 CPUs, one CPU per trial. Prints wall
time ÷ (sum of trial compute ÷ 2) -- 1.0 would be two perfectly packed cores with no
orchestration cost; the goal is <= 1.3 -- with actor reuse (what the sweep uses) and, for
comparison, without. Trial compute is the training + evaluation time each trial reports
(``time_s``), so process start-up, data loading and Tune's bookkeeping all count as overhead.
(GPU packing: bench/bench_gpu_packing.py.)

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
from orchestrator.sweep import build_parser, build_tuner, plan_sweep, start_run  # noqa: E402


def write_space(directory: Path, name: str, steps: int, seeds: int, shared: int) -> str:
    """The exploration sweep resized: ``seeds`` × (``shared`` + 1 baseline) trials of 2 iterations."""
    raw = yaml.safe_load((ss.SPACES_DIR / "explore.yaml").read_text())
    raw.update(seeds=list(range(seeds)), num_samples=shared, iterations=2, steps_per_iteration=steps)
    raw["fixed"]["eval_samples"] = 100
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def run(space: str, storage: Path, name: str, reuse_actors: bool) -> tuple[float, pd.DataFrame]:
    plan = plan_sweep(build_parser().parse_args(["--space", space, "--storage", str(storage), "--name", name,
                                           "--cpus-per-trial", "1"]))
    start_run(plan)
    started = time.perf_counter()
    build_tuner(plan, reuse_actors=reuse_actors).fit()
    return time.perf_counter() - started, plan.run.read_table("trials.parquet").to_pandas()


def warm_metrics_cache(space: str) -> None:
    """Train and cache the metrics classifier once, so no measured run pays for it."""
    from trainables.data import load_tasks
    from trainables.metrics import TaskMetrics

    spec = ss.load_space(space)
    TaskMetrics(load_tasks(spec.data, samples_per_task=spec.fixed["samples_per_task"]))


def cpu_bench(tmp: Path, steps: int) -> None:
    import ray

    space = write_space(tmp, "cpu", steps, seeds=4, shared=3)  # 16 trials
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        warm_metrics_cache(space)
        rows = []
        for reuse in (True, False):
            wall, trials = run(space, tmp / "results", f"reuse-{reuse}", reuse_actors=reuse)
            compute = float(trials["time_s"].sum())
            rows.append((reuse, len(trials), wall, compute / len(trials), wall / (compute / 2)))
    finally:
        ray.shutdown()
    print(f"{'reuse_actors':>12} {'trials':>6} {'wall s':>7} {'trial s':>7} {'ratio':>6}  (goal <= 1.3)")
    for reuse, n, wall, per_trial, ratio in rows:
        print(f"{str(reuse):>12} {n:>6} {wall:>7.1f} {per_trial:>7.2f} {ratio:>6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=350,
                        help="steps per iteration (2 iterations per trial; 350 gives ~5 s trials)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        os.environ.setdefault("MTGAN_CACHE", str(Path(tmp) / "cache"))
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        cpu_bench(Path(tmp), args.steps)


if __name__ == "__main__":
    main()
