"""Train one multi-task GAN without Ray and watch its quality: ``python -m trainables``.

    python -m trainables [--data digits:classes=0,1,2,3] [--steps 3000] [--every 500]
                         [--mode soft] [--alpha 0.1] [--out samples.png]

Prints, per evaluation, the elapsed seconds, per-task FID and the fraction of samples the
metric classifier assigns to the right task, then the real-vs-real FID floor.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from trainables.config import GANConfig
from trainables.train import MultiTaskGAN


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainables", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=GANConfig.data)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--mode", default=GANConfig.mode)
    parser.add_argument("--alpha", type=float, default=GANConfig.alpha)
    parser.add_argument("--samples-per-task", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="write a PNG grid of samples here at the end")
    args = parser.parse_args(argv)
    try:
        config = GANConfig(data=args.data, mode=args.mode, alpha=args.alpha, seed=args.seed,
                           samples_per_task=args.samples_per_task)
        gan = MultiTaskGAN(config, device=args.device)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from trainables.metrics import save_grid

    names = gan.tasks.names
    print(f"{gan.tasks.n_tasks} tasks {names}, mode={config.mode}, alpha={config.alpha}, device={args.device}")

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
