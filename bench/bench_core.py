"""Task-steps per second of the multi-task GAN core: all tasks batched vs tasks in a Python loop.

    python bench/bench_core.py [--steps 300] [--device cpu|cuda|all]

The loop baseline is what a pile of scripts does: n single-task GANs stepped one after the
other in one process. Prints one row per (device, n) with both rates and their ratio, and for
each device the cost of an n-task step relative to the 1-task step.
"""
from __future__ import annotations

import argparse
import time

import torch

from trainables.config import GANConfig
from trainables.data import TaskSet, load_tasks
from trainables.train import MultiTaskGAN


def steps_per_second(gans: list[MultiTaskGAN], steps: int, device: torch.device) -> float:
    """Task-steps/s of stepping every GAN in ``gans`` ``steps`` times, round robin."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for gan in gans:  # warm-up: allocator, cuDNN/BLAS handles, Adam state
        gan.train_step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        for gan in gans:
            gan.train_step()
    sync()
    elapsed = time.perf_counter() - start
    return steps * sum(g.tasks.n_tasks for g in gans) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    parser.add_argument("--width", type=int, default=128)
    args = parser.parse_args()
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]

    tasks8 = load_tasks("digits:classes=0,1,2,3,4,5,6,7")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"))
    print(f"{'device':6} {'n':>2} {'batched task-steps/s':>21} {'loop task-steps/s':>18} "
          f"{'batched/loop':>12} {'step cost vs n=1':>17}")
    for device in devices:
        dev = torch.device(device)
        one_task_step = None
        for n in (1, 2, 4, 8):
            subset = TaskSet(tasks8.spec, tasks8.tasks[:n])
            cfg = GANConfig(data=tasks8.spec, mode="soft", alpha=0.1, width=args.width)
            batched = steps_per_second([MultiTaskGAN(cfg, tasks=subset, device=dev)], args.steps, dev)
            singles = [MultiTaskGAN(cfg, tasks=TaskSet(tasks8.spec, (t,)), device=dev)
                       for t in subset.tasks]
            loop = steps_per_second(singles, args.steps, dev)
            step_time = n / batched
            one_task_step = one_task_step or step_time
            print(f"{device:6} {n:>2} {batched:>21,.0f} {loop:>18,.0f} {batched / loop:>12.2f} "
                  f"{step_time / one_task_step:>16.2f}x", flush=True)


if __name__ == "__main__":
    main()
