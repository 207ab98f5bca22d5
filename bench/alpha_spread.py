"""How far the tasks' shareable parameters spread around S after 150 steps, per α and pull.

    python bench/alpha_spread.py

One group of arms per pull (4 digit tasks, width 32, z 8, batch 16, seed 0, lr 1e-3); prints
each arm's ``sharing_spread`` (mean over tasks of Σ‖θ_i − mean_j θ_j‖²): what the README's
"how α acts" table shows.
"""
from __future__ import annotations

from trainables.config import GANConfig
from trainables.data import load_tasks
from trainables.train import PopulationGAN

ALPHAS = {"decoupled": (0.0, 1.0, 10.0, 100.0, 1000.0), "l2": (0.0, 0.01, 0.1, 1.0, 10.0)}


def main() -> None:
    tasks = load_tasks("digits:classes=0,1,2,3")
    for pull, alphas in ALPHAS.items():
        group = PopulationGAN([GANConfig(width=32, z_dim=8, batch_size=16, mode="soft", alpha=a, pull=pull)
                               for a in alphas], tasks=tasks)
        group.train(150)
        print(f"{pull:9}", ", ".join(f"α={a:g}: {s:.4f}" for a, s in zip(alphas, group.sharing_spread())))


if __name__ == "__main__":
    main()
