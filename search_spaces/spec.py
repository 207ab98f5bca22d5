"""A sweep file, read and validated: :class:`SweepSpec` and :func:`load_space` (see README.md here).

Every problem is a one-line ValueError naming the file. Pure Python (yaml): no Ray.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search_spaces.bounded_yaml import load_bounded

from trainables.config import FEATURE_MODES, SHARED_MODES

SPACES_DIR = Path(__file__).resolve().parent
SEARCHES = ("random", "grid", "optuna")
SCHEDULERS = ("fifo", "asha", "pbt")
# GANConfig fields a sweep file may set in `fixed` / `knobs` (mode, alpha, lambdas, seed and data
# have their own top-level keys).
GAN_KNOBS = ("samples_per_task", "test_fraction", "gan_loss", "width", "z_dim", "share_g", "share_d",
             "batch_size", "lr", "beta1", "eval_samples", "arch", "channels", "precision")
# Modes a sweep may name (the independent arm is added automatically); SHARED_MODES by default.
SWEEP_MODES = SHARED_MODES + FEATURE_MODES
TOP_KEYS = ("description", "data", "seeds", "num_samples", "search", "scheduler", "iterations",
            "steps_per_iteration", "samples_kept", "space_seed", "max_failures", "keep_checkpoints",
            "arms_per_trial", "baselines_per_seed", "fixed",
            "knobs", "sharing")
SHARING_KEYS = ("modes", "alpha", "lambdas")


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file (plus command-line overrides)."""

    name: str
    source: str
    data: str
    seeds: tuple[int, ...]
    num_samples: int
    search: str
    scheduler: str
    iterations: int
    steps_per_iteration: int
    samples_kept: int
    space_seed: int
    fixed: dict[str, Any]
    knobs: dict[str, list[Any]]
    modes: tuple[str, ...]
    alpha: dict[str, Any]
    lambdas: dict[str, Any]
    description: str = ""
    max_failures: int = 1  # Tune FailureConfig: restarts of a crashed trial from its checkpoint
    keep_checkpoints: int = 1  # checkpoints a finished trial keeps (the last holds model and samples)
    # Arms (configuration × seed) one Tune trial trains as one batched model; "auto" is resolved
    # by the sweep (1 on CPU, a GPU share's worth on GPU) and recorded resolved.
    arms_per_trial: int | str = "auto"
    # Independent baseline trials per (seed, knobs), each with its own training streams: an
    # integer >= 1, or "auto" (Dunnett's allocation, √(shared configurations) capped at 3).
    baselines_per_seed: int | str = 1
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def with_overrides(self, **overrides: Any) -> "SweepSpec":
        """Replace fields given (None means keep) and validate the result again."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        if "seeds" in changes:
            changes["seeds"] = tuple(int(s) for s in changes["seeds"])
        spec = dataclasses.replace(self, **changes)
        _check_spec(spec)
        return spec

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("extra")
        out["seeds"] = list(self.seeds)
        out["modes"] = list(self.modes)
        return out


def space_path(name_or_file: str) -> Path:
    """The YAML file of a shipped space name or an explicit path; ValueError when missing."""
    if name_or_file.endswith((".yaml", ".yml")) or "/" in name_or_file:
        path = Path(name_or_file)
        if not path.is_file():
            raise ValueError(f"sweep file {name_or_file} does not exist")
        return path
    path = SPACES_DIR / f"{name_or_file}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(available_spaces()))
        raise ValueError(f"unknown space {name_or_file!r} (known: {known}; or pass a FILE.yaml)")
    return path


def available_spaces() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def load_space(name_or_file: str) -> SweepSpec:
    """Read and validate a sweep file; every problem is a one-line ValueError naming the file."""
    path = space_path(name_or_file)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot be read ({type(e).__name__})") from None
    raw = load_bounded(text, str(path))  # alias bombs and deep nesting: one line, at once
    try:
        return _spec_from_dict(raw, path)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _spec_from_dict(raw: Any, path: Path) -> SweepSpec:
    if not isinstance(raw, dict):
        raise ValueError("a sweep file must be a mapping of keys")
    _check_keys(raw, TOP_KEYS, "")
    for required in ("data", "seeds", "iterations", "steps_per_iteration", "sharing"):
        if required not in raw:
            raise ValueError(f"missing key {required!r}")
    sharing = raw["sharing"]
    if not isinstance(sharing, dict):
        raise ValueError("'sharing' must be a mapping")
    _check_keys(sharing, SHARING_KEYS, "sharing.")
    fixed = raw.get("fixed") or {}
    knobs = raw.get("knobs") or {}
    if not isinstance(fixed, dict) or not isinstance(knobs, dict):
        raise ValueError("'fixed' and 'knobs' must be mappings")
    _check_keys(fixed, GAN_KNOBS, "fixed.")
    _check_keys(knobs, GAN_KNOBS, "knobs.")
    both = sorted(set(fixed) & set(knobs))
    if both:
        raise ValueError(f"key(s) {', '.join(both)} are both fixed and knobs")
    for key, values in knobs.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"knobs.{key} must be a non-empty list of values")
    seeds = raw["seeds"]
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError("'seeds' must be a list of integers")
    modes = sharing.get("modes", list(SHARED_MODES))
    if isinstance(modes, str):
        modes = [modes]
    spec = SweepSpec(
        name=path.stem, source=str(path.resolve()), data=str(raw["data"]), seeds=tuple(seeds),
        num_samples=_as_int(raw.get("num_samples", 1), "num_samples"),
        search=str(raw.get("search", "random")), scheduler=str(raw.get("scheduler", "fifo")),
        iterations=_as_int(raw["iterations"], "iterations"),
        steps_per_iteration=_as_int(raw["steps_per_iteration"], "steps_per_iteration"),
        samples_kept=_as_int(raw.get("samples_kept", 16), "samples_kept"),
        space_seed=_as_int(raw.get("space_seed", 0), "space_seed"),
        fixed=dict(fixed), knobs={k: list(v) for k, v in knobs.items()}, modes=tuple(modes),
        alpha=_distribution(sharing.get("alpha", {"loguniform": [1e-3, 10.0]}), "alpha"),
        lambdas=_distribution(sharing.get("lambdas", "equal"), "lambdas"),
        description=str(raw.get("description", "")),
        max_failures=_as_int(raw.get("max_failures", 1), "max_failures"),
        keep_checkpoints=_as_int(raw.get("keep_checkpoints", 1), "keep_checkpoints"),
        arms_per_trial=raw.get("arms_per_trial", "auto"),
        baselines_per_seed=raw.get("baselines_per_seed", 1),
    )
    _check_spec(spec)
    return spec


def _check_keys(mapping: dict, known: tuple[str, ...], prefix: str) -> None:
    unknown = sorted(str(k) for k in mapping if k not in known)
    if unknown:
        raise ValueError(f"unknown key {prefix}{unknown[0]} (known: {', '.join(known)})")


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return value


def _distribution(value: Any, name: str) -> dict[str, Any]:
    """Normalise `alpha`/`lambdas` to {kind: argument}."""
    if isinstance(value, str):
        if name == "lambdas" and value == "equal":
            return {"equal": True}
        raise ValueError(f"sharing.{name}: unknown form {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"values": [float(value)]}
    if isinstance(value, list):
        return {"values": value} if name == "alpha" else {"grid": value}
    if isinstance(value, dict) and len(value) == 1:
        kinds = ("loguniform", "values") if name == "alpha" else ("dirichlet", "loguniform", "grid", "equal")
        kind = next(iter(value))
        if kind not in kinds:
            raise ValueError(f"unknown key sharing.{name}.{kind} (known: {', '.join(kinds)})")
        return dict(value)
    raise ValueError(f"sharing.{name} must be a list, a number or a one-key mapping, got {value!r}")


def _check_spec(spec: SweepSpec) -> None:
    """Everything that can be checked without knowing the tasks."""
    if spec.search not in SEARCHES:
        raise ValueError(f"search must be one of {', '.join(SEARCHES)}, got {spec.search!r}")
    if spec.scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {spec.scheduler!r}")
    for name in ("num_samples", "iterations", "steps_per_iteration"):
        if getattr(spec, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(spec, name)}")
    check_arms_per_trial(spec.arms_per_trial)
    bps = spec.baselines_per_seed
    if bps != "auto" and (isinstance(bps, bool) or not isinstance(bps, int) or bps < 1):
        raise ValueError(f"baselines_per_seed must be an integer >= 1 or 'auto', got {bps!r}")
    if bps not in (1, "auto") and spec.search == "optuna":
        raise ValueError(f"baselines_per_seed {bps} needs search random or grid (an optuna sweep runs one "
                         f"baseline per seed); use 1")
    if spec.max_failures < 0:
        raise ValueError(f"max_failures must be >= 0, got {spec.max_failures}")
    if spec.keep_checkpoints < 1:
        raise ValueError(f"keep_checkpoints must be >= 1 (the last checkpoint holds the trained model and the "
                         f"sample images), got {spec.keep_checkpoints}")
    if spec.samples_kept < 0:
        raise ValueError(f"samples_kept must be >= 0, got {spec.samples_kept}")
    if not spec.seeds:
        raise ValueError("at least one seed is needed")
    if len(set(spec.seeds)) != len(spec.seeds):
        raise ValueError(f"seeds must be distinct, got {list(spec.seeds)}")
    if not spec.modes or any(m not in SWEEP_MODES for m in spec.modes):
        raise ValueError(f"sharing.modes must be a non-empty subset of {', '.join(SWEEP_MODES)} "
                         f"(the independent arm is added automatically), got {list(spec.modes)}")
    alpha_kind, alpha_arg = next(iter(spec.alpha.items()))
    if alpha_kind == "loguniform":
        lo, hi = _range(alpha_arg, "sharing.alpha.loguniform")
        if lo <= 0:
            raise ValueError(f"sharing.alpha.loguniform needs 0 < low <= high, got {alpha_arg}")
    else:
        _check_alpha_values(alpha_arg)
    lam_kind, lam_arg = next(iter(spec.lambdas.items()))
    if lam_kind == "dirichlet":
        if not _is_number(lam_arg) or lam_arg <= 0:
            raise ValueError(f"sharing.lambdas.dirichlet (concentration) must be > 0, got {lam_arg!r}")
    elif lam_kind == "loguniform":
        lo, _ = _range(lam_arg, "sharing.lambdas.loguniform")
        if lo <= 0:
            raise ValueError(f"sharing.lambdas.loguniform needs 0 < low <= high, got {lam_arg}")
    elif lam_kind == "grid":
        if not isinstance(lam_arg, list) or not lam_arg or not all(isinstance(r, list) for r in lam_arg):
            raise ValueError("sharing.lambdas.grid must be a list of λ vectors (lists)")
        for row in lam_arg:
            check_lambda_vector(row, len(row))
    if spec.search == "grid":
        if alpha_kind != "values" or lam_kind in ("dirichlet", "loguniform"):
            raise ValueError("search: grid needs sharing.alpha as a list of values and sharing.lambdas "
                             "as a grid or 'equal'")
    if spec.search == "optuna" and lam_kind == "grid":
        raise ValueError("search: optuna needs sharing.lambdas as dirichlet, loguniform or equal")


def check_arms_per_trial(value: Any) -> None:
    if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"arms_per_trial must be an integer >= 1 or 'auto', got {value!r}")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _range(arg: Any, where: str) -> tuple[float, float]:
    if not (isinstance(arg, list) and len(arg) == 2 and all(_is_number(x) for x in arg) and arg[0] <= arg[1]):
        raise ValueError(f"{where} must be [low, high] with low <= high, got {arg!r}")
    return float(arg[0]), float(arg[1])


def _check_alpha_values(values: Any) -> None:
    if not isinstance(values, list) or not values:
        raise ValueError("sharing.alpha values must be a non-empty list")
    for a in values:
        if not _is_number(a) or a < 0:
            raise ValueError(f"alpha must be a finite number >= 0, got {a!r}")


def check_lambda_vector(row: Any, n_tasks: int) -> None:
    if not isinstance(row, list) or len(row) != n_tasks:
        raise ValueError(f"got {len(row) if isinstance(row, list) else row!r} lambda values for {n_tasks} tasks")
    if not all(_is_number(x) and x >= 0 for x in row) or not any(x > 0 for x in row):
        raise ValueError(f"lambdas must be finite, >= 0 and not all 0, got {row}")


def check_against_tasks(spec: SweepSpec, n_tasks: int) -> None:
    """Checks that need the number of tasks (λ grid rows must have one value per task)."""
    kind, arg = next(iter(spec.lambdas.items()))
    if kind == "grid":
        for row in arg:
            try:
                check_lambda_vector(row, n_tasks)
            except ValueError as e:
                raise ValueError(f"{spec.source}: sharing.lambdas.grid: {e}") from None
