"""CPU seconds of a sweep's trials, one arm per trial vs arms grouped (a benchmark, not a test).

    .venv/bin/python bench/sweep_trial_cost.py [--space default] [--arms-per-trial 8] [--steps N]

Expands the sweep file into its arms, packs them as ``--arms-per-trial`` packs them, and times
in this process (no Ray, one torch thread, CPU time) one trial of every kind -- (data regime,
hard or not, arms in the trial) -- doing what the trainable does: build the model, then per
iteration train, evaluate every arm, write the state and draw the kept samples. Kinds are timed
one-arm and grouped in turn, so a loaded machine slows both alike. Prints each kind, the sum
over the sweep's trials both ways and their ratio. Ray's own costs (driver, daemons, ~10% of
2 CPUs in a default sweep) are not in it. Run two copies at once to include the contention of
two trials on two cores, as a sweep on 2 CPUs runs them.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections import Counter
import io
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import search_spaces as ss  # noqa: E402
from orchestrator.tune_mapping import pack_arms  # noqa: E402
from trainables.config import GANConfig  # noqa: E402
from trainables.data import load_tasks  # noqa: E402
from trainables.train import PopulationGAN  # noqa: E402
from trainables.tune_trainable import _tasks_for  # noqa: E402


def trial_seconds(group: list[dict], iterations: int, steps: int, kept: int) -> float:
    """CPU seconds of one Tune trial training ``group`` (its arms' trial dicts)."""
    configs = [GANConfig.from_dict(ss.gan_fields(trial)) for trial in group]
    started = time.process_time()
    model = PopulationGAN(configs, tasks=_tasks_for(configs[0]),
                          reference_tasks=_tasks_for(dataclasses.replace(configs[0], samples_per_task=None)))
    for _ in range(iterations):
        model.train(steps)
        model.evaluate()
        torch.save(model.state_dict(), io.BytesIO())
        model.sample(kept)
    return time.process_time() - started


def kind(group: list[dict]) -> tuple:
    config = GANConfig.from_dict(ss.gan_fields(group[0]))
    return config.samples_per_task, config.mode == "hard", len(group)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="default")
    parser.add_argument("--arms-per-trial", type=int, default=8)
    parser.add_argument("--steps", type=int, help="steps per iteration (default: the sweep file's)")
    parser.add_argument("--only", choices=["one", "grouped"], help="time one way only (two copies at once, one "
                                                                   "way at a time: as a sweep on 2 CPUs runs)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = ss.load_space(args.space)
    steps = args.steps or spec.steps_per_iteration
    arms = ss.expand_trials(spec, load_tasks(spec.data, samples_per_task=2).n_tasks)
    trial_seconds(arms[:1], 1, 10, 1)  # warm-up: imports, data, the metric classifier's cache
    totals = {}
    ways = {"one": ("one arm per trial", 1),
            "grouped": (f"up to {args.arms_per_trial} arms per trial", args.arms_per_trial)}
    for label, size in [way for key, way in ways.items() if args.only in (None, key)]:
        groups = pack_arms(arms, size)
        kinds = [kind(group) for group in groups]
        counts = Counter(kinds)
        seen: dict[tuple, float] = {}
        for group, key in zip(groups, kinds):
            if key not in seen:
                seen[key] = trial_seconds(group, spec.iterations, steps, spec.samples_kept)
                regime, hard, n = key
                print(f"{label}: images={regime or 'all'} {'hard' if hard else 'soft/independent'} {n} arm(s): "
                      f"{seen[key]:.1f} CPU-s ({seen[key] / n:.2f} per arm) x {counts[key]}", flush=True)
        totals[label] = (sum(seen[k] * c for k, c in counts.items()), len(groups))
    print(f"\n{args.space}: {len(arms)} arms, {spec.iterations} x {steps} steps; trials' CPU seconds in all:")
    for label, (seconds, n_trials) in totals.items():
        print(f"  {label}: {seconds:7.0f} ({n_trials} trials)")
    if len(totals) == 2:
        (one, _), (grouped, _) = totals.values()
        print(f"  grouped / one arm per trial: {grouped / one:.2f}")


if __name__ == "__main__":
    main()
