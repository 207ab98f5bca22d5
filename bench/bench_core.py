"""Task-steps per second of the multi-task GAN core: tasks batched vs looped, and arms grouped.

    python bench/bench_core.py [--steps 300] [--device cpu|cuda|all] [--arms 1,4,16]
                               [--data digits:classes=0,1,2,3]

Part 1 (tasks): the loop baseline is what a pile of scripts does: n single-task GANs stepped one
after the other in one process. One row per (device, n) with both rates and their ratio, and
the cost of an n-task step relative to the 1-task step.

Part 2 (arms): K arms of the 4-task GAN (width 128, batch 64, soft arms at several α with an
independent baseline among them, every arm its own seed) as one PopulationGAN, against the
same K arms as K separate one-arm models stepped in turn. On CUDA the grouped model runs with
its step captured as a CUDA graph and without (eager), and the script first checks that a
captured step gives bit for bit the eager step's parameters. Each row also gives the share of
wall time an iteration (500 steps, the default sweep's) would spend in the batched evaluation
of every arm (``evaluate``: sampling, one classifier pass, per-task FID/KID/precision/recall).
"""
from __future__ import annotations

import argparse
import time
import traceback

import torch

from trainables.config import GANConfig
from trainables.data import TaskSet, load_tasks
from trainables.train import MultiTaskGAN, PopulationGAN

STEPS_PER_ITERATION = 500


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def steps_per_second(models: list[PopulationGAN], steps: int, device: torch.device) -> float:
    """Task-steps/s of stepping every model in ``models`` ``steps`` times, round robin."""
    for model in models:  # warm-up: allocator, BLAS handles, Adam state, CUDA-graph capture
        for _ in range(3):
            model.train_step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        for model in models:
            model.train_step()
    sync(device)
    elapsed = time.perf_counter() - start
    return steps * sum(m.n_arms * m.tasks.n_tasks for m in models) / elapsed


def arm_configs(k: int, data: str) -> list[GANConfig]:
    """k arms: one in 8 an independent baseline, the rest soft at α spread over 10..300."""
    return [GANConfig(data=data, mode="independent" if i % 8 == 0 else "soft",
                      alpha=10.0 * 30 ** ((i % 7) / 6), seed=i, eval_samples=200) for i in range(k)]


def graph_equals_eager(tasks: TaskSet, data: str, steps: int = 20) -> bool:
    configs = arm_configs(4, data)
    graph = PopulationGAN(configs, tasks=tasks, device="cuda", capture=True)
    eager = PopulationGAN(configs, tasks=tasks, device="cuda", capture=False)
    for model in (graph, eager):
        model.train(steps)
    assert graph._graph is not None, "the step was not captured"
    return all(torch.equal(a, b) for net in ("G", "D")
               for a, b in zip(getattr(graph, net).state_dict().values(), getattr(eager, net).state_dict().values()))


def evaluation_seconds(model: PopulationGAN, device: torch.device) -> float:
    try:
        model.evaluate()  # builds the metrics (classifier, reference statistics) once
    except ImportError as err:  # a bare GPU image may lack the metrics' dependencies
        print(f"(no evaluation: {err})")
        return float("nan")
    sync(device)
    start = time.perf_counter()
    model.evaluate()
    sync(device)
    return time.perf_counter() - start


def tasks_part(tasks8: TaskSet, devices: list[str], steps: int, width: int) -> None:
    print(f"{'device':6} {'n':>2} {'batched task-steps/s':>21} {'loop task-steps/s':>18} "
          f"{'batched/loop':>12} {'step cost vs n=1':>17}")
    for device in devices:
        dev = torch.device(device)
        one_task_step = None
        for n in (1, 2, 4, 8):
            subset = TaskSet(tasks8.spec, tasks8.tasks[:n])
            cfg = GANConfig(data=tasks8.spec, mode="soft", alpha=10.0, width=width)
            batched = steps_per_second([MultiTaskGAN(cfg, tasks=subset, device=dev)], steps, dev)
            singles = [MultiTaskGAN(cfg, tasks=TaskSet(tasks8.spec, (t,)), device=dev) for t in subset.tasks]
            loop = steps_per_second(singles, steps, dev)
            step_time = n / batched
            one_task_step = one_task_step or step_time
            print(f"{device:6} {n:>2} {batched:>21,.0f} {loop:>18,.0f} {batched / loop:>12.2f} "
                  f"{step_time / one_task_step:>16.2f}x", flush=True)


def arms_part(tasks: TaskSet, data: str, devices: list[str], arms: list[int], steps: int) -> None:
    print(f"\n{'device':6} {'K':>4} {'how':>14} {'task-steps/s':>13} {'vs K separate':>13} "
          f"{'eval s':>7} {'eval share':>10}")
    for device in devices:
        dev = torch.device(device)
        captures = [False]
        if dev.type == "cuda":
            try:
                print(f"cuda: CUDA-graph step == eager step (4 arms, 20 steps, bit for bit): "
                      f"{graph_equals_eager(tasks, data)}", flush=True)
                captures = [True, False]
            except Exception:  # report it, and still measure the eager step
                traceback.print_exc()
        for k in arms:
            configs = arm_configs(k, data)
            separate = steps_per_second([PopulationGAN([c], tasks=tasks, device=dev) for c in configs],
                                        max(1, steps // k), dev) if k <= 64 else float("nan")
            for capture in captures:
                model = PopulationGAN(configs, tasks=tasks, device=dev, capture=capture)
                rate = steps_per_second([model], steps, dev)
                evaluation = evaluation_seconds(model, dev)
                train = STEPS_PER_ITERATION * k * tasks.n_tasks / rate
                how = "grouped, graph" if capture else "grouped"
                print(f"{device:6} {k:>4} {how:>14} {rate:>13,.0f} {rate / separate:>12.2f}x "
                      f"{evaluation:>7.2f} {evaluation / (evaluation + train):>9.0%}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--arms", default="1,4,16", help="K values of part 2 ('' skips it)")
    parser.add_argument("--skip-tasks", action="store_true", help="skip part 1")
    parser.add_argument("--data", default="digits:classes=0,1,2,3", help="the 4 tasks of part 2")
    args = parser.parse_args()
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"))
    if not args.skip_tasks:
        tasks_part(load_tasks("digits:classes=0,1,2,3,4,5,6,7"), devices, args.steps, args.width)
    if args.arms:
        arms_part(load_tasks(args.data), args.data, devices, [int(k) for k in args.arms.split(",")], args.steps)


if __name__ == "__main__":
    main()
