"""One trial's configuration: a flat, validated dataclass (every experiment is a config)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

INDEPENDENT, SOFT, HARD = "independent", "soft", "hard"
FEATURE, FEATURE_PRIVATE = "feature", "feature_private"
MODES = (INDEPENDENT, SOFT, HARD, FEATURE, FEATURE_PRIVATE)
SHARED_MODES = (SOFT, HARD)  # S in parameter space: a sweep's modes unless it names others
FEATURE_MODES = (FEATURE, FEATURE_PRIVATE)  # S in feature space (trainables.feature)
ARCHS = ("mlp", "conv")
PRECISIONS = ("fp32", "tf32", "bf16")
GAN_LOSSES = ("minimax", "nonsaturating", "hinge")
PULLS = ("decoupled", "l2")
# What may differ between the arms of one batched group (see GANConfig.group_key).
ARM_FIELDS = ("mode", "alpha", "lambdas", "seed", "replicate")


@dataclass(frozen=True)
class GANConfig:
    """Everything that defines one multi-task GAN run.

    ``lambdas`` is one weight per task (None means all 1); ``alpha`` is the strength of the
    pull of each task's shareable parameters towards the shared representation S (used only
    in ``soft`` mode; in the feature modes, the weight of the re-encoding pull). ``arch`` is
    ``mlp`` or ``conv`` (None: by image size, see ``trainables.arch``), ``channels`` the conv
    networks' base width, ``precision`` the arithmetic of the forward passes
    (``trainables.precision``). ``pull`` is how α acts: ``decoupled`` (after each optimiser step
    θ_i ← θ_i − lr·α·(θ_i − S): the same coupling on every layer, whatever the gradient scale)
    or ``l2`` (α‖θ_i − S‖² added to the loss, which Adam divides by each parameter's gradient
    RMS). ``replicate`` numbers the independent baselines of one seed (a sweep's
    ``baselines_per_seed``): each trains on the seed's data subset with its own random streams.
    """

    data: str = "digits:classes=0,1,2,3"
    samples_per_task: int | None = None
    test_fraction: float = 0.25
    mode: str = "soft"
    alpha: float = 0.1
    pull: str = "decoupled"
    lambdas: tuple[float, ...] | None = None
    gan_loss: str = "nonsaturating"
    width: int = 128
    z_dim: int = 32
    share_g: int = 2
    share_d: int = 2
    arch: str | None = None
    channels: int = 32
    precision: str = "fp32"
    batch_size: int = 64
    lr: float = 1e-3
    beta1: float = 0.5
    seed: int = 0
    replicate: int = 0
    eval_samples: int = 500
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.gan_loss not in GAN_LOSSES:
            raise ValueError(f"gan_loss must be one of {', '.join(GAN_LOSSES)}, got {self.gan_loss!r}")
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha!r}")
        if self.arch is not None and self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)} (or unset: by image size), got {self.arch!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.pull not in PULLS:
            raise ValueError(f"pull must be one of {', '.join(PULLS)}, got {self.pull!r}")
        if self.lambdas is not None:
            object.__setattr__(self, "lambdas", tuple(float(x) for x in self.lambdas))
            check_lambdas(self.lambdas, len(self.lambdas))
        for name in ("width", "channels", "z_dim", "batch_size", "eval_samples"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("share_g", "share_d"):
            if not 0 <= int(getattr(self, name)) <= 3:
                raise ValueError(f"{name} must be between 0 and 3 layers, got {getattr(self, name)!r}")
        if isinstance(self.replicate, bool) or not isinstance(self.replicate, int) or self.replicate < 0:
            raise ValueError(f"replicate must be an integer >= 0, got {self.replicate!r}")
        if self.samples_per_task is not None and int(self.samples_per_task) < 1:
            raise ValueError(f"samples_per_task must be >= 1, got {self.samples_per_task!r}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "GANConfig":
        """Build from a flat dict (a Tune trial config); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown config key(s): {', '.join(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("extra")
        return out

    def group_key(self) -> tuple:
        """Arms with equal keys can train as one batched model: same data, shapes and optimiser;
        they may differ in mode (soft with independent; hard, feature and feature_private each
        only with itself), α, λ, seed and replicate."""
        shared = tuple(getattr(self, f.name) for f in dataclasses.fields(self)
                       if f.name not in ARM_FIELDS and f.name != "extra")
        return shared + (self.mode if self.mode in (HARD, *FEATURE_MODES) else SOFT,)

    def task_lambdas(self, n_tasks: int) -> tuple[float, ...]:
        """λ for ``n_tasks`` tasks, checked against the task count."""
        if self.lambdas is None:
            return (1.0,) * n_tasks
        check_lambdas(self.lambdas, n_tasks)
        return self.lambdas


def check_lambdas(lambdas: tuple[float, ...] | list[float], n_tasks: int) -> None:
    """λ must be n finite values >= 0, not all zero."""
    if len(lambdas) != n_tasks:
        raise ValueError(f"got {len(lambdas)} lambda values for {n_tasks} tasks")
    if any(not math.isfinite(x) or x < 0 for x in lambdas):
        raise ValueError(f"lambdas must be finite and >= 0, got {list(lambdas)}")
    if not any(x > 0 for x in lambdas):
        raise ValueError("lambdas must not all be 0")
