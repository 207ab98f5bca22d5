"""Train one multi-task GAN without Ray and watch its quality: ``python -m trainables``.

    python -m trainables [--data digits:classes=0,1,2,3] [--steps 3000] [--every 500]
                         [--mode soft] [--alpha 0.1] [--arch conv] [--precision bf16] [--out samples.png]

Prints, per evaluation, the elapsed seconds, per-task FID and the fraction of samples the
metric classifier assigns to the right task, then the real-vs-real FID floor.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from trainables.cli import OneLineParser, UsageError
from trainables.config import ARCHS, MODES, PRECISIONS, GANConfig
from trainables.train import MultiTaskGAN

DESCRIPTION = """\
Train one multi-task GAN (one generator and discriminator per task, sharing through S)
on this machine, without Ray, and print its quality every --every steps: per-task FID
(lower is better) and the fraction of samples the metric classifier assigns to the right
task. At the end it prints the real-vs-real FID floor and the training speed."""


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m trainables", description=DESCRIPTION)
    p.add_argument("--data", default=GANConfig.data,
                   help="task spec: digits, digits:classes=0,1, digits:domains=plain,inverted, "
                        "npz:PATH, folder:PATH, shapes:tasks=4 (default: %(default)s)")
    p.add_argument("--steps", type=int, default=3000,
                   help="training steps, each one D and one G update of every task (default: %(default)s)")
    p.add_argument("--every", type=int, default=500, help="evaluate every this many steps (default: %(default)s)")
    p.add_argument("--mode", default=GANConfig.mode, choices=MODES,
                   help="sharing: independent (none), soft (pull of strength alpha towards S), hard (tied layers) "
                        "(default: %(default)s)")
    p.add_argument("--alpha", type=float, default=GANConfig.alpha,
                   help="sharing strength in soft mode, >= 0 (default: %(default)s)")
    p.add_argument("--arch", default=None, choices=ARCHS,
                   help="networks: mlp (flattened images) or conv (DCGAN-style) (default: by image size, "
                        "conv from 28 px)")
    p.add_argument("--channels", type=int, default=GANConfig.channels,
                   help="the conv networks' base width (default: %(default)s)")
    p.add_argument("--precision", default=GANConfig.precision, choices=PRECISIONS,
                   help="arithmetic of the forward passes: fp32, tf32 (GPU tensor cores) or bf16 (autocast) "
                        "(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=GANConfig.batch_size,
                   help="real and generated images per task per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=GANConfig.lr, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--samples-per-task", type=int, default=None,
                   help="training images per task (default: all of the task's training split)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of initialisation, batches and noise (default: %(default)s)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device, e.g. cpu, cuda, cuda:1 (default here: %(default)s)")
    p.add_argument("--out", default=None, help="write a PNG grid of samples here at the end (default: none)")
    return p


def _check(args: argparse.Namespace) -> None:
    if args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    if args.every < 1:
        raise UsageError(f"--every must be >= 1, got {args.every}")
    try:
        torch.device(args.device)
    except RuntimeError as e:
        raise UsageError(f"--device {args.device}: {str(e).splitlines()[0]}") from None
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: torch sees no CUDA GPU on this machine")
    if args.out is not None:
        parent = Path(args.out).resolve().parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise UsageError(f"--out {args.out}: {parent} is not a writable directory")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        _check(args)
        config = GANConfig(data=args.data, mode=args.mode, alpha=args.alpha, seed=args.seed,
                           samples_per_task=args.samples_per_task, arch=args.arch, channels=args.channels,
                           precision=args.precision, batch_size=args.batch_size, lr=args.lr)
        gan = MultiTaskGAN(config, device=args.device)
    except (UsageError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from trainables.metrics import save_grid

    names = gan.tasks.names
    print(f"{gan.tasks.n_tasks} tasks {names}, mode={config.mode}, alpha={config.alpha}, "
          f"arch={gan.arch}, precision={config.precision}, device={args.device}")

    def report(elapsed: float) -> None:
        rows = gan.evaluate()
        fid = " ".join(f"{r['fid']:7.2f}" for r in rows)
        acc = " ".join(f"{r['accuracy']:5.2f}" for r in rows)
        print(f"{elapsed:6.1f}s step {gan.step:5d}  fid {fid}  right-task {acc}", flush=True)

    report(0.0)
    start = time.perf_counter()
    train_time = 0.0
    while gan.step < args.steps:
        t0 = time.perf_counter()
        gan.train(min(args.every, args.steps - gan.step))
        train_time += time.perf_counter() - t0
        report(time.perf_counter() - start)
    floor = " ".join(f"{r['fid']:7.2f}" for r in gan.metrics().real_floor())
    print(f"real-vs-real FID floor (held-out vs train): {floor}")
    print(f"{gan.step * gan.tasks.n_tasks / train_time:,.0f} task-steps/s while training")
    if args.out:
        save_grid(gan.sample(16), args.out, names=names)
        print(f"samples: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
