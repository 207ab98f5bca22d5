"""Tasks and their data: one image distribution per task, with a fixed held-out split.

CONTRACT (filled in by the data work): see load_tasks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Task:
    name: str
    train: np.ndarray  # float32 (N, C, H, W) in [-1, 1]
    test: np.ndarray  # float32 (M, C, H, W) in [-1, 1]; fixed held-out split for evaluation
    train_labels: np.ndarray | None = None  # int64 (N,) class labels inside the source, if known
    test_labels: np.ndarray | None = None


@dataclass(frozen=True)
class TaskSet:
    spec: str
    tasks: tuple[Task, ...]

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.tasks[0].train.shape[1:])  # type: ignore[return-value]

    def fingerprint(self) -> str:
        """Stable hash of names and arrays (metric caches are keyed by it)."""
        raise NotImplementedError


def load_tasks(spec: str, samples_per_task: int | None = None, test_fraction: float = 0.25,
               split_seed: int = 0) -> TaskSet:
    raise NotImplementedError
