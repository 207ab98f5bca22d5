"""Task-steps per second of 32×32 DCGAN tasks: batched as grouped convolutions vs a per-task loop,
and populations of arms (K arms × 4 tasks in one grouped network), per precision.

    python bench/bench_conv.py [--device cpu|cuda|all] [--precision fp32,tf32,bf16] [--seconds 2]

Runs without Ray, on the project's trainer (``trainables.train.PopulationGAN`` with
``arch: conv``; on CUDA each step is one captured CUDA graph) and real 32×32 images of
``shapes:tasks=4,size=32``. Rows:

- ``4-task trial``: the 4 tasks as one grouped network vs the same 4 tasks as 4 single-task
  models stepped in a Python loop (fp32; the ratio is the point).
- ``arms × 4 tasks``: aggregate task-steps/s of K arms (soft sharing, each its own seed and α)
  in one model, for each precision, with the GPU's peak memory.

Each rate is steps over wall time after a warm-up (which includes the CUDA-graph capture), for
about ``--seconds`` per measurement. On CUDA, ``--variants`` repeats the rows per activation
layout: ``channels_last`` (NHWC, what the trainer uses on CUDA) and ``nchw`` (torch's default),
both with ``cudnn.benchmark`` on as the trainer sets it (on an H200 it changed nothing in NCHW).
Defaults: DCGAN's 64 base channels and batch 64 (the issue's anchor); use ``--channels 16
--batch 16 --mode feature`` etc. to vary. Timings on a shared machine are inflated: report the
machine's load with them.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables import conv  # noqa: E402
from trainables.config import PRECISIONS, GANConfig  # noqa: E402
from trainables.data import TaskSet, load_tasks  # noqa: E402
from trainables.train import PopulationGAN  # noqa: E402

DATA = "shapes:tasks=4,size=32"
VARIANTS = ("channels_last", "nchw")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def task_steps_per_second(models: list[PopulationGAN], seconds: float, device: torch.device) -> float:
    """Aggregate task-steps/s of stepping every model round robin for about ``seconds``."""
    for model in models:  # warm-up: cuDNN algorithm choice, allocator, Adam state, graph capture
        for _ in range(4):
            model.train_step()
    sync(device)
    steps, start = 0, time.perf_counter()
    while steps < 3 or time.perf_counter() - start < seconds:
        for model in models:
            model.train_step()
        steps += 1
        if steps % 10 == 0:
            sync(device)
    sync(device)
    elapsed = time.perf_counter() - start
    return steps * sum(m.n_arms * m.tasks.n_tasks for m in models) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    parser.add_argument("--precision", default=",".join(PRECISIONS),
                        help="comma-separated precisions for the arms rows (default: all)")
    parser.add_argument("--seconds", type=float, default=2.0, help="wall time per measurement (default 2)")
    parser.add_argument("--channels", type=int, default=64, help="base channels (default 64, DCGAN's)")
    parser.add_argument("--batch", type=int, default=64, help="images per task per step (default 64)")
    parser.add_argument("--mode", default="soft", choices=["soft", "hard", "feature", "feature_private"])
    parser.add_argument("--variants", default="channels_last",
                        help="comma-separated activation layouts on CUDA: channels_last, nchw")
    parser.add_argument("--arms", default=None,
                        help="comma-separated arm counts (default: 1,4,16,64 on CUDA, 1,2 on CPU)")
    args = parser.parse_args()
    precisions = args.precision.split(",")
    try:
        arm_counts = [int(a) for a in args.arms.split(",")] if args.arms else None
    except ValueError:
        arm_counts = [0]
    variants = args.variants.split(",")
    if (any(p not in PRECISIONS for p in precisions) or args.seconds <= 0
            or any(v not in VARIANTS for v in variants) or args.channels < 1
            or args.batch < 1 or (arm_counts is not None and min(arm_counts) < 1)):
        print(f"error: --precision takes {', '.join(PRECISIONS)}; --variants {', '.join(VARIANTS)}; "
              f"--seconds, --channels, --batch and --arms must be positive", file=sys.stderr)
        sys.exit(2)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            print("error: --device cuda but no CUDA device is available", file=sys.stderr)
            sys.exit(2)
        devices.remove("cuda")

    tasks = load_tasks(DATA)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU")
          + f"; {tasks.n_tasks} tasks 32×32, conv, {args.channels} base channels, batch {args.batch}, "
          f"mode {args.mode}")

    def config(seed: int, precision: str) -> GANConfig:
        alpha = 1.0 + 10.0 * seed if args.mode != "hard" else 0.0
        return GANConfig(data=DATA, arch="conv", channels=args.channels, batch_size=args.batch, z_dim=64,
                         lr=2e-4, mode=args.mode, alpha=alpha, seed=seed, precision=precision)

    def build(configs: list[GANConfig], task_set: TaskSet, device: torch.device, variant: str) -> PopulationGAN:
        conv.MEMORY_FORMAT = torch.contiguous_format if variant == "nchw" else None  # None: the trainer's
        return PopulationGAN(configs, tasks=task_set, device=device)

    for device_name in devices:
        device = torch.device(device_name)
        for variant in variants if device.type == "cuda" else ["nchw"]:
            label = f"{device_name:5} {variant if device.type == 'cuda' else ''}".rstrip()
            batched = task_steps_per_second([build([config(0, "fp32")], tasks, device, variant)],
                                            args.seconds, device)
            singles = [build([config(0, "fp32")], TaskSet(tasks.spec, (t,)), device, variant) for t in tasks.tasks]
            loop = task_steps_per_second(singles, args.seconds, device)
            del singles
            print(f"{label} 4-task trial, fp32: batched {batched:8.1f} task-steps/s, loop {loop:8.1f}, "
                  f"batched/loop {batched / loop:5.2f}×", flush=True)
            for precision in precisions:
                row = []
                for arms in arm_counts or ([1, 4, 16, 64] if device.type == "cuda" else [1, 2]):
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats()
                    model = build([config(a, precision) for a in range(arms)], tasks, device, variant)
                    rate = task_steps_per_second([model], args.seconds, device)
                    del model
                    peak = (f" ({torch.cuda.max_memory_allocated() / 2**30:.1f} GiB)"
                            if device.type == "cuda" else "")
                    row.append(f"K={arms}: {rate:8.1f}{peak}")
                print(f"{label} arms × {tasks.n_tasks} tasks, {precision}: " + ", ".join(row), flush=True)

if __name__ == "__main__":
    main()
