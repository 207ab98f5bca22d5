"""The default sweep's wall time on CPU with arms grouped ÷ one arm per trial (a benchmark, not a test).

    .venv/bin/python bench/bench_cpu_grouping.py [--arms-per-trial 8] [--steps N] [--iterations N]
                                                 [--seeds N] [--cpus-per-trial 1]

Runs the shipped default sweep (``--space default``, resized by the flags; the defaults are the
file's own) twice through ``python -m orchestrator.sweep`` in this process, each on its own
embedded Ray (start-up included): once with ``--arms-per-trial 1`` (what ``auto`` picked on
CPU before it grouped large sweeps) and once grouped. The goal (issue 8) is grouped ÷ one-arm
≤ 1.0 on 2 CPUs: grouping must not slow the CPU path down. The default 8 arms per trial
holds all arms that can share a model in the default sweep (one seed at one
samples_per_task: its soft arms and baselines; hard arms form their own group).
(GPU packing: bench/bench_gpu_packing.py.)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import search_spaces as ss  # noqa: E402
from orchestrator.sweep import main as sweep  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = yaml.safe_load((ss.SPACES_DIR / "default.yaml").read_text())
    parser.add_argument("--arms-per-trial", type=int, default=8, help="arms per trial of the grouped run")
    parser.add_argument("--steps", type=int, default=default["steps_per_iteration"], help="steps per iteration")
    parser.add_argument("--iterations", type=int, default=default["iterations"])
    parser.add_argument("--seeds", type=int, default=len(default["seeds"]))
    parser.add_argument("--cpus-per-trial", default="1")
    args = parser.parse_args()
    space = {**default, "steps_per_iteration": args.steps, "iterations": args.iterations,
             "seeds": list(range(args.seeds))}
    walls = {}
    with tempfile.TemporaryDirectory(prefix="cpu-grouping-") as tmp:
        path = Path(tmp) / "space.yaml"
        path.write_text(yaml.safe_dump(space))
        for label, arms in (("one arm per trial", 1), (f"{args.arms_per_trial} arms per trial", args.arms_per_trial)):
            started = time.perf_counter()
            code = sweep(["--space", str(path), "--storage", tmp, "--name", f"arms{arms}",
                          "--cpus-per-trial", args.cpus_per_trial, "--arms-per-trial", str(arms)])
            if code != 0:
                raise SystemExit(f"sweep with --arms-per-trial {arms} failed (exit {code})")
            walls[label] = time.perf_counter() - started
    first = next(iter(walls.values()))
    print(f"\ndefault sweep, {args.seeds} seeds, {args.iterations} x {args.steps} steps, "
          f"{args.cpus_per_trial} CPU per trial (Ray start-up included):")
    for label, wall in walls.items():
        print(f"{label:>22}: {wall:8.1f} s wall  {wall / first:5.2f}x")


if __name__ == "__main__":
    main()
