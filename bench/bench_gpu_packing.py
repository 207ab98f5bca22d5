"""Aggregate task-steps/s of a real sweep: one arm per trial packed k per GPU, and arms grouped.

    python bench/bench_gpu_packing.py [--per-gpu 1,8,16] [--grouped 64,256] [--steps 1500]
                                      [--reference] [--gpus 1]

Runs ``python -m orchestrator.sweep`` in-process on an embedded local Ray, once per setting, on
4 digit-class tasks (8×8, width 128, batch 64), then reads the Parquet it wrote: the aggregate
rate is all arms' task-steps between their first and last report divided by the wall time
those windows cover (the first iteration, with CUDA start-up, graph capture and the metric
classifier, is left out).

(a) one arm per trial, ``--gpus-per-trial 1/k`` and k trials (``--per-gpu``);
(b) grouped: one trial on the whole GPU training K arms as one batched model
    (``--arms-per-trial K``, ``--grouped``);
(c) ``--reference``: the wall time of a 64-seed × (baseline + 15 configurations) sweep at
    5 × 500 steps with ``--arms-per-trial auto``, Ray start-up included.

Every row's ratio is against the first row of (a) (``--per-gpu '' --grouped '' --reference``
times the reference sweep alone). With ``--gpus 0`` it runs on CPU
(``--cpus-per-trial 1``) to check the script itself.
"""
from __future__ import annotations

import argparse
import tempfile
import time
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
    """(task-steps/s over the window from every arm's first report to the last report, arms)."""
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
    parser.add_argument("--per-gpu", default="1,8,16")
    parser.add_argument("--steps", type=int, default=1500, help="steps per iteration")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--grouped", default="64,256", help="arms per trial of (b) ('' skips it)")
    parser.add_argument("--reference", action="store_true", help="also time the 64-seed reference sweep (c)")
    parser.add_argument("--gpus", type=int, default=1, help="0: run on CPU to check the script")
    args = parser.parse_args()
    rows = []

    def run(tmp: str, name: str, space_fields: dict, flags: list[str]) -> float:
        space = Path(tmp) / f"{name}.yaml"
        space.write_text(yaml.safe_dump({**SPACE, **space_fields}))
        started = time.perf_counter()
        code = sweep(["--space", str(space), "--storage", tmp, "--name", name, "--cpus-per-trial", "1", *flags])
        if code != 0:
            raise SystemExit(f"sweep {name} failed (exit {code})")
        return time.perf_counter() - started

    def measure(tmp: str, label: str, name: str) -> None:
        rate, arms = aggregate_rate(Path(tmp) / name, n_tasks=4)
        devices = sorted(set(pq.read_table(Path(tmp) / name / "trials.parquet",
                                           columns=["device"]).column("device").to_pylist()))
        rows.append((label, arms, rate, ",".join(map(str, devices))))

    sized = {"iterations": args.iterations, "steps_per_iteration": args.steps}
    with tempfile.TemporaryDirectory(prefix="gpu-packing-") as tmp:
        for k in (int(x) for x in args.per_gpu.split(",") if x):
            gpu_share = f"{1 / k:.4f}" if args.gpus else "0"
            run(tmp, f"pack{k}", {**sized, "num_samples": max(1, k - 1)},
                ["--gpus-per-trial", gpu_share, "--arms-per-trial", "1"])
            measure(tmp, f"{k} trials/GPU", f"pack{k}")
        for k in (int(x) for x in args.grouped.split(",") if x):
            run(tmp, f"group{k}", {**sized, "num_samples": k - 1},
                ["--gpus-per-trial", "1" if args.gpus else "0", "--arms-per-trial", str(k)])
            measure(tmp, f"{k} arms/trial", f"group{k}")
        if args.reference:
            wall = run(tmp, "reference", {"seeds": list(range(64)), "num_samples": 15, "iterations": 5,
                                          "steps_per_iteration": 500},
                       ["--gpus-per-trial", "1" if args.gpus else "0", "--arms-per-trial", "auto"])
    if rows:
        base = rows[0][2]
        print(f"\n{'setting':>15} {'arms':>5} {'aggregate task-steps/s':>23} {'vs first':>9}  device")
        for label, arms, rate, devices in rows:
            print(f"{label:>15} {arms:>5} {rate:>23,.0f} {rate / base:>8.2f}x  {devices}")
    if args.reference:
        print(f"reference sweep, 64 seeds x 16 arms at 5 x 500 steps, --arms-per-trial auto: {wall:,.0f} s wall "
              f"(Ray start-up included)")


if __name__ == "__main__":
    main()
