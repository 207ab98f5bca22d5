"""Task-steps per second of 32×32 DCGAN tasks: batched as grouped convolutions vs a per-task loop,
and populations of arms (K arms × 4 tasks in one grouped network), per precision.

    python bench/bench_conv.py [--device cpu|cuda|all] [--precision fp32,tf32,bf16] [--seconds 2]

Runs without Ray. A step is the project's GAN step on the conv networks (trainables.conv): one
discriminator update and one generator update of every arm and task (Adam, non-saturating loss,
soft sharing with the decoupled pull and S ← mean), on real 32×32 images of
``shapes:tasks=4,size=32``. Rows:

- ``batched/loop``: a 4-task trial as one grouped network vs the same 4 tasks as 4 single-task
  networks stepped in a Python loop (the ratio is the point; both fp32).
- ``arms``: aggregate task-steps/s of K arms × 4 tasks in one network, for each precision.

Each rate is steps over wall time after a warm-up, for ``--seconds`` per measurement (at least
3 steps). Timings on a shared machine are inflated: report the machine's load with them.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables.conv import build_conv_networks  # noqa: E402
from trainables.data import load_tasks  # noqa: E402
from trainables.model import discriminator_loss, generator_loss  # noqa: E402
from trainables.precision import PRECISIONS, forward_autocast, step_precision  # noqa: E402

SIZE, TASKS = 32, 4


class ConvTrial:
    """K arms × n tasks of conv G/D with their optimisers and a fixed pool of real images."""

    def __init__(self, arms: int, images: torch.Tensor, channels: int, z_dim: int, batch: int,
                 precision: str, device: torch.device) -> None:
        self.tasks = images.shape[0]
        gens = [torch.Generator().manual_seed(a) for a in range(arms)]
        self.G, self.D = build_conv_networks(self.tasks, (1, SIZE, SIZE), channels, z_dim, "soft", 2, 2, gens)
        self.G.to(device)
        self.D.to(device)
        fused = {"fused": True} if device.type == "cuda" else {}
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=2e-4, betas=(0.5, 0.999), **fused)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=2e-4, betas=(0.5, 0.999), **fused)
        self.images, self.arms, self.batch, self.z_dim = images, arms, batch, z_dim
        self.rate = torch.full((arms,), 2e-4 * 0.1, device=device)
        self.precision, self.device = precision, device

    def step(self) -> None:
        a, t, b = self.arms, self.tasks, self.batch
        idx = torch.randint(0, self.images.shape[1], (a, t, b), device=self.device)
        real = self.images[torch.arange(t, device=self.device)[None, :, None], idx]
        with step_precision(self.precision):
            with forward_autocast(self.precision, self.device):
                with torch.no_grad():
                    fake = self.G(torch.randn(a, t, b, self.z_dim, device=self.device))
                real_logits, fake_logits = self.D(real)[..., 0], self.D(fake)[..., 0]
            d_loss = discriminator_loss("nonsaturating", real_logits.float().flatten(0, 1),
                                        fake_logits.float().flatten(0, 1)).sum()
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            self.D.pull_(self.rate)
            with forward_autocast(self.precision, self.device):
                logits = self.D(self.G(torch.randn(a, t, b, self.z_dim, device=self.device)))[..., 0]
            g_loss = generator_loss("nonsaturating", logits.float().flatten(0, 1)).sum()
            self.opt_g.zero_grad(set_to_none=True)
            g_loss.backward(inputs=list(self.G.parameters()))
            self.opt_g.step()
            self.G.pull_(self.rate)
            self.G.update_shared()
            self.D.update_shared()


def task_steps_per_second(trials: list[ConvTrial], seconds: float, device: torch.device) -> float:
    """Aggregate task-steps/s of stepping every trial round robin for about ``seconds``."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):  # warm-up: cuDNN algorithm choice, allocator, Adam state
        for trial in trials:
            trial.step()
    sync()
    steps, start = 0, time.perf_counter()
    while steps < 3 or time.perf_counter() - start < seconds:
        for trial in trials:
            trial.step()
        steps += 1
        if steps % 5 == 0:
            sync()
    sync()
    elapsed = time.perf_counter() - start
    return steps * sum(t.arms * t.tasks for t in trials) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    parser.add_argument("--precision", default=",".join(PRECISIONS),
                        help="comma-separated precisions for the arms rows (default: all)")
    parser.add_argument("--seconds", type=float, default=2.0, help="wall time per measurement (default 2)")
    parser.add_argument("--channels", type=int, default=64, help="base channels (default 64, DCGAN's)")
    parser.add_argument("--batch", type=int, default=64, help="images per task per step (default 64)")
    parser.add_argument("--arms", default=None,
                        help="comma-separated arm counts (default: 1,4,16,64 on CUDA, 1,2 on CPU)")
    args = parser.parse_args()
    precisions = args.precision.split(",")
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or args.seconds <= 0 or args.channels < 1 or args.batch < 1:
        print(f"error: --precision takes {', '.join(PRECISIONS)}; --seconds, --channels and --batch "
              f"must be positive", file=sys.stderr)
        sys.exit(2)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            print("error: --device cuda but no CUDA device is available", file=sys.stderr)
            sys.exit(2)
        devices.remove("cuda")

    tasks = load_tasks(f"shapes:tasks={TASKS},size={SIZE}")
    pool = min(len(t.train) for t in tasks.tasks)
    images_np = torch.stack([torch.from_numpy(t.train[:pool]).reshape(pool, -1) for t in tasks.tasks])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU")
          + f"; {TASKS} tasks {SIZE}×{SIZE}, {args.channels} base channels, batch {args.batch}")
    for device_name in devices:
        device = torch.device(device_name)
        images = images_np.to(device)
        make = lambda arms, imgs, precision: ConvTrial(  # noqa: E731
            arms, imgs, args.channels, 64, args.batch, precision, device)
        batched = task_steps_per_second([make(1, images, "fp32")], args.seconds, device)
        loop = task_steps_per_second([make(1, images[t:t + 1], "fp32") for t in range(TASKS)],
                                     args.seconds, device)
        print(f"{device_name:5} 4-task trial fp32: batched {batched:8.1f} task-steps/s, loop {loop:8.1f}, "
              f"batched/loop {batched / loop:5.2f}×")
        arm_counts = ([int(a) for a in args.arms.split(",")] if args.arms
                      else [1, 4, 16, 64] if device.type == "cuda" else [1, 2])
        for precision in precisions:
            row = []
            for arms in arm_counts:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                rate = task_steps_per_second([make(arms, images, precision)], args.seconds, device)
                peak = (f" ({torch.cuda.max_memory_allocated() / 2**30:.1f} GiB)"
                        if device.type == "cuda" else "")
                row.append(f"K={arms}: {rate:8.1f}{peak}")
            print(f"{device_name:5} arms × {TASKS} tasks, {precision}: " + ", ".join(row))


if __name__ == "__main__":
    main()
