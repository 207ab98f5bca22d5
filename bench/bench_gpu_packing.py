"""Aggregate task-steps/s of a real sweep with 1, 4 and 8 trials packed on one GPU.

    python bench/bench_gpu_packing.py [--per-gpu 1,4,8] [--steps 1500] [--gpus 1]

Runs ``python -m orchestrator.sweep`` in-process on an embedded local Ray, once per packing,
with ``--gpus-per-trial 1/k`` and k trials of 4 digit-class tasks (8×8, width 128, batch 64),
then reads the Parquet it wrote: the aggregate rate is all trials' task-steps between their
first and last report divided by the wall time those windows cover (the first iteration, with
CUDA start-up and the metric classifier, is left out). With ``--gpus 0`` it runs on CPU
(``--cpus-per-trial 1``) to check the script itself.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import yaml

from orchestrator.sweep import main as sweep

SPACE = {
    "description": "GPU packing benchmark",
    "data": "digits:classes=0,1,2,3",
    "seeds": [0],
    "search": "random",
    "scheduler": "fifo",
    "samples_kept": 0,
    "space_seed": 0,
    "fixed": {"width": 128, "batch_size": 64, "eval_samples": 200},
    "sharing": {"modes": ["soft"], "alpha": {"loguniform": [0.01, 1.0]}, "lambdas": {"dirichlet": 4.0}},
}


def aggregate_rate(run_dir: Path, n_tasks: int) -> tuple[float, int]:
    """(task-steps/s over the window from every trial's first report to the last report, trials)."""
    table = ds.dataset(run_dir / "metrics").to_table(columns=["trial_id", "iteration", "step", "timestamp"])
    df = table.to_pandas().drop_duplicates(["trial_id", "iteration"])
    # schema 2 writes a UTC timestamp (version 1: unix seconds)
    df["timestamp"] = df["timestamp"].map(lambda t: t.timestamp() if hasattr(t, "timestamp") else float(t))
    per_trial = df.groupby("trial_id").agg(first_t=("timestamp", "min"), last_t=("timestamp", "max"),
                                           first_step=("step", "min"), last_step=("step", "max"))
    steps = (per_trial["last_step"] - per_trial["first_step"]).sum() * n_tasks
    # Wall time covered by at least one trial's window (trials of one packing may run in waves).
    window, reach = 0.0, float("-inf")
    for start, end in sorted(zip(per_trial["first_t"], per_trial["last_t"])):
        window += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return steps / window, len(per_trial)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-gpu", default="1,4,8")
    parser.add_argument("--steps", type=int, default=1500, help="steps per iteration")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--gpus", type=int, default=1, help="0: run on CPU to check the script")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-packing-") as tmp:
        for k in (int(x) for x in args.per_gpu.split(",")):
            space = Path(tmp) / f"pack{k}.yaml"
            space.write_text(yaml.safe_dump({**SPACE, "num_samples": max(1, k - 1),
                                              "iterations": args.iterations,
                                              "steps_per_iteration": args.steps}))
            gpu_share = f"{1 / k:.4f}" if args.gpus else "0"
            code = sweep(["--space", str(space), "--storage", tmp, "--name", f"pack{k}",
                          "--gpus-per-trial", gpu_share, "--cpus-per-trial", "1"])
            if code != 0:
                raise SystemExit(f"sweep with {k} trials per GPU failed (exit {code})")
            rate, trials = aggregate_rate(Path(tmp) / f"pack{k}", n_tasks=4)
            devices = sorted(set(pq.read_table(Path(tmp) / f"pack{k}" / "trials.parquet",
                                               columns=["device"]).column("device").to_pylist()))
            rows.append((k, trials, rate, ",".join(map(str, devices))))
    base = rows[0][2]
    print(f"\n{'trials/GPU':>10} {'trials':>6} {'aggregate task-steps/s':>23} {'vs first':>9}  device")
    for k, trials, rate, devices in rows:
        print(f"{k:>10} {trials:>6} {rate:>23,.0f} {rate / base:>8.2f}x  {devices}")


if __name__ == "__main__":
    main()
