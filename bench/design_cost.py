"""A sweep design's CPU cost relative to the default sweep's (a benchmark, not a test).

Expands both sweep files into their trials, times one representative trial of every kind
(data regime x mode) in this process -- a few hundred training steps and one evaluation, one
torch thread -- and adds up steps x seconds-per-step + evaluations x seconds-per-evaluation +
a per-trial orchestration cost (~0.5 s with Tune's actor reuse on 2 CPUs, README facts) over
all trials. Prints each design's predicted CPU seconds and the ratio to the baseline design:
the design's sweep time on 2 CPUs is about that ratio times the baseline's measured sweep time.
Both are timed in the same run, so a loaded machine slows both alike (the ratio is what counts).
Every arm is costed as its own trial (``arms_per_trial: 1``): what grouping arms saves (``auto``
on CPU) is measured by bench/sweep_trial_cost.py, so compare designs here and grouping there.

    .venv/bin/python bench/design_cost.py [--design default] [--baseline explore] [--steps 200]
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import search_spaces as ss  # noqa: E402
from trainables.config import GANConfig  # noqa: E402
from trainables.data import load_tasks  # noqa: E402
from trainables.train import MultiTaskGAN  # noqa: E402

TRIAL_OVERHEAD_S = 0.5


def kind(trial: dict) -> tuple:
    return (trial.get("samples_per_task"), trial["mode"])


def time_kind(trial: dict, steps: int) -> tuple[float, float]:
    """(seconds per training step, seconds per evaluation) of one trial like ``trial``."""
    config = GANConfig.from_dict(ss.gan_fields(trial))
    gan = MultiTaskGAN(config)
    gan.train(10)  # warm-up: first-call allocations
    started = time.perf_counter()
    gan.train(steps)
    per_step = (time.perf_counter() - started) / steps
    gan.evaluate()  # the first evaluation builds the metric classifier's cache
    started = time.perf_counter()
    gan.evaluate()
    return per_step, time.perf_counter() - started


def design_seconds(name: str, steps: int, timings: dict) -> tuple[float, int, Counter]:
    spec = ss.load_space(name)
    n_tasks = load_tasks(spec.data, samples_per_task=2).n_tasks
    trials = ss.expand_trials(spec, n_tasks)
    kinds = Counter(kind(t) for t in trials)
    total = 0.0
    for trial in trials:
        key = kind(trial)
        if key not in timings:
            timings[key] = time_kind(trial, steps)
        per_step, per_eval = timings[key]
        total += (spec.iterations * spec.steps_per_iteration * per_step + spec.iterations * per_eval
                  + TRIAL_OVERHEAD_S)
    return total, len(trials), kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--design", default="default")
    parser.add_argument("--baseline", default="explore")
    parser.add_argument("--steps", type=int, default=200, help="timed training steps per kind")
    args = parser.parse_args()
    torch.set_num_threads(1)
    timings: dict = {}
    results = {}
    for name in (args.baseline, args.design):
        results[name] = design_seconds(name, args.steps, timings)
    for key, (per_step, per_eval) in sorted(timings.items(), key=str):
        print(f"  samples_per_task={key[0]!s:5s} {key[1]:12s} {1e3 * per_step:7.2f} ms/step  {per_eval:6.2f} s/eval")
    base = results[args.baseline][0]
    for name, (seconds, n_trials, kinds) in results.items():
        print(f"{name:10s} {n_trials:4d} trials  {seconds / 60:6.1f} CPU-min  ratio {seconds / base:5.2f}"
              f"  (~{seconds / 120:5.1f} min on 2 CPUs at these timings)")


if __name__ == "__main__":
    main()
