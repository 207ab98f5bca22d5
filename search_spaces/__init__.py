"""Sweep files: what to try (λ_i, α, sharing mode, seeds, ordinary knobs), as plain Python.

A sweep file is YAML (``smoke``, ``default``, ``full`` ship here; any ``FILE.yaml`` works):

```yaml
data: digits:classes=0,1,2,3        # task spec (trainables.data.load_tasks)
seeds: [0, 1, 2, 3, 4]              # every configuration runs at every seed
num_samples: 8                      # shared configurations (random search) ...
search: random                      # random | grid | optuna
scheduler: fifo                     # fifo | asha | pbt
iterations: 4                       # reports per trial
steps_per_iteration: 150            # training steps between reports
samples_kept: 16                    # images per task saved with each checkpoint
fixed: {width: 64, lr: 0.001}       # GANConfig fields, the same in every trial
knobs: {samples_per_task: [10, 20]} # GANConfig fields crossed with everything (not searched)
sharing:
  modes: [soft, hard]               # shared modes tried (the independent arm is implicit)
  alpha: {loguniform: [0.001, 10]}  # or a list of values (grid search)
  lambdas: {dirichlet: 1.0}         # or {loguniform: [lo, hi]} | {grid: [[..], ..]} | equal
```

Pairing is structural. A *shared configuration* is (mode, α, λ). Every shared configuration
runs at every seed and every combination of ``knobs``; each (seed, knob combination) also gets
exactly one independent baseline arm (mode=independent, α=0, λ=1). ``config_id`` names a
configuration without its seed (seeds of one configuration group together; the baseline's is
``independent``); ``baseline_key`` hashes everything but mode/α/λ (seed included), so a shared
trial pairs with the independent trial of equal ``baseline_key``.

Random and grid search are expanded here, up front, from a seeded numpy RNG (``space_seed``),
into an explicit list of trial dicts: the same file and arguments always give the same trials,
which is what makes ``--resume`` deterministic. In ``hard`` mode α is unused (hard sharing is
the α→∞ limit) and set to 0; group by ``mode``, not by α, to find the baselines.

This module is pure Python (numpy, yaml; modes and trial keys from trainables.config/keys): no Ray. ``orchestrator.spaces`` maps it to Tune.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from trainables.config import HARD, INDEPENDENT, SHARED_MODES
from trainables.keys import ORCHESTRATOR_KEYS

SPACES_DIR = Path(__file__).resolve().parent
SEARCHES = ("random", "grid", "optuna")
SCHEDULERS = ("fifo", "asha", "pbt")
# GANConfig fields a sweep file may set in `fixed` / `knobs` (mode, alpha, lambdas, seed and data
# have their own top-level keys).
GAN_KNOBS = ("samples_per_task", "test_fraction", "gan_loss", "width", "z_dim", "share_g", "share_d",
             "batch_size", "lr", "beta1", "eval_samples")
TOP_KEYS = ("description", "data", "seeds", "num_samples", "search", "scheduler", "iterations",
            "steps_per_iteration", "samples_kept", "space_seed", "max_failures", "fixed", "knobs", "sharing")
SHARING_KEYS = ("modes", "alpha", "lambdas")
# Knobs that identify a configuration in config_id besides (mode, α, λ): every crossed knob.
IDENTITY_EXCLUDED = ("seed", "config_id", "baseline_key")


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
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
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
    if spec.max_failures < 0:
        raise ValueError(f"max_failures must be >= 0, got {spec.max_failures}")
    if spec.samples_kept < 0:
        raise ValueError(f"samples_kept must be >= 0, got {spec.samples_kept}")
    if not spec.seeds:
        raise ValueError("at least one seed is needed")
    if len(set(spec.seeds)) != len(spec.seeds):
        raise ValueError(f"seeds must be distinct, got {list(spec.seeds)}")
    if not spec.modes or any(m not in SHARED_MODES for m in spec.modes):
        raise ValueError(f"sharing.modes must be a non-empty subset of {', '.join(SHARED_MODES)} "
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
            _check_lambda_vector(row, len(row))
    if spec.search == "grid":
        if alpha_kind != "values" or lam_kind in ("dirichlet", "loguniform"):
            raise ValueError("search: grid needs sharing.alpha as a list of values and sharing.lambdas "
                             "as a grid or 'equal'")
    if spec.search == "optuna" and lam_kind == "grid":
        raise ValueError("search: optuna needs sharing.lambdas as dirichlet, loguniform or equal")


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


def _check_lambda_vector(row: Any, n_tasks: int) -> None:
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
                _check_lambda_vector(row, n_tasks)
            except ValueError as e:
                raise ValueError(f"{spec.source}: sharing.lambdas.grid: {e}") from None


# ------------------------------------------------------------------------------- expansion
def sample_shared_configs(spec: SweepSpec, n_tasks: int) -> list[dict[str, Any]]:
    """The shared configurations (mode, alpha, lambdas), drawn up front from ``space_seed``.

    random: ``num_samples`` draws; modes in turn (balanced); α log-uniform (or uniform over
    the listed values); λ Dirichlet(c·1)·n (on the simplex, summing to n so that equal weights
    are all 1), log-uniform per task, a row of the grid, or all 1.
    grid: the product modes × α values × λ rows (hard mode collapses α, which it ignores);
    ``num_samples`` then caps nothing, it is reported as the product's size.
    """
    check_against_tasks(spec, n_tasks)
    alpha_kind, alpha_arg = next(iter(spec.alpha.items()))
    lam_kind, lam_arg = next(iter(spec.lambdas.items()))
    if spec.search == "grid":
        lam_rows = lam_arg if lam_kind == "grid" else [[1.0] * n_tasks]
        out, seen = [], set()
        for mode, alpha, lam in itertools.product(spec.modes, alpha_arg, lam_rows):
            cfg = _shared(mode, float(alpha), [float(x) for x in lam])
            key = config_id(cfg)
            if key not in seen:
                seen.add(key)
                out.append(cfg)
        return out
    rng = np.random.default_rng(spec.space_seed)
    out = []
    for i in range(spec.num_samples):
        mode = spec.modes[i % len(spec.modes)]  # balanced across modes, not left to chance
        if alpha_kind == "loguniform":
            lo, hi = alpha_arg
            alpha = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        else:
            alpha = float(alpha_arg[int(rng.integers(len(alpha_arg)))])
        if lam_kind == "dirichlet":
            lam = rng.dirichlet([float(lam_arg)] * n_tasks) * n_tasks
        elif lam_kind == "loguniform":
            lam = np.exp(rng.uniform(math.log(lam_arg[0]), math.log(lam_arg[1]), size=n_tasks))
        elif lam_kind == "grid":
            lam = np.asarray(lam_arg[int(rng.integers(len(lam_arg)))], dtype=float)
        else:
            lam = np.ones(n_tasks)
        # Rounded so the values written to Parquet, shown in tables and hashed into config_id
        # are exactly the values the trial ran with.
        out.append(_shared(mode, round(alpha, 6), [round(float(x), 6) for x in lam]))
    return out


def _shared(mode: str, alpha: float, lambdas: list[float]) -> dict[str, Any]:
    return {"mode": mode, "alpha": 0.0 if mode == HARD else alpha, "lambdas": lambdas}


def baseline_arm(n_tasks: int) -> dict[str, Any]:
    return {"mode": INDEPENDENT, "alpha": 0.0, "lambdas": [1.0] * n_tasks}


def knob_combinations(spec: SweepSpec) -> list[dict[str, Any]]:
    keys = sorted(spec.knobs)
    return [dict(zip(keys, values)) for values in itertools.product(*(spec.knobs[k] for k in keys))]


def base_trial(spec: SweepSpec) -> dict[str, Any]:
    """The keys every trial shares: data, fixed GANConfig fields and the orchestrator keys."""
    return {"data": spec.data, **spec.fixed, "steps_per_iteration": spec.steps_per_iteration,
            "iterations": spec.iterations, "samples_kept": spec.samples_kept}


def expand_trials(spec: SweepSpec, n_tasks: int) -> list[dict[str, Any]]:
    """Every trial of a random/grid sweep as a flat dict (GANConfig fields + orchestrator keys).

    Order: for each knob combination and seed, the baseline arm first, then the shared
    configurations, so an interrupted sweep has its baselines.
    """
    shared = sample_shared_configs(spec, n_tasks)
    trials = []
    for knobs in knob_combinations(spec):
        for seed in spec.seeds:
            for arm in [baseline_arm(n_tasks), *shared]:
                trial = {**base_trial(spec), **knobs, **arm, "seed": int(seed)}
                trials.append(with_identity(trial))
    return trials


def _digest(values: dict[str, Any]) -> str:
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def config_id(trial: dict[str, Any]) -> str:
    """Identifies (mode, alpha, lambdas, other knobs) but not the seed; 'independent' for every
    baseline arm (baselines of different knob values differ in ``baseline_key``)."""
    rest = {k: v for k, v in trial.items() if k not in IDENTITY_EXCLUDED}
    if trial.get("mode") == INDEPENDENT:
        return INDEPENDENT
    return f"{trial['mode']}-{_digest(rest)}"


def baseline_key(trial: dict[str, Any]) -> str:
    """Hash of everything except mode/alpha/lambdas (seed included): a trial's pairing key."""
    rest = {k: v for k, v in trial.items()
            if k not in ("mode", "alpha", "lambdas", "config_id", "baseline_key")}
    return _digest(rest)


def with_identity(trial: dict[str, Any]) -> dict[str, Any]:
    return {**trial, "config_id": config_id(trial), "baseline_key": baseline_key(trial)}


def gan_fields(trial: dict[str, Any]) -> dict[str, Any]:
    """The GANConfig part of a trial dict (drops the orchestrator keys)."""
    out = {k: v for k, v in trial.items() if k not in ORCHESTRATOR_KEYS}
    if out.get("lambdas") is not None:
        out["lambdas"] = tuple(out["lambdas"])
    return out
