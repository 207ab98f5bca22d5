"""A validated sweep spec expanded into trials: the shared configurations drawn up front from
``space_seed``, the independent baseline arms of every (seed, knob combination) (``replicate``
0, 1, ... when ``baselines_per_seed`` > 1), and the ``config_id``/``baseline_key`` that pair them
(see README.md here). Pure Python (numpy): no Ray.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
from typing import Any

import numpy as np

from search_spaces.spec import SweepSpec, check_against_tasks
from trainables.config import HARD, INDEPENDENT
from trainables.keys import ORCHESTRATOR_KEYS

# Keys left out of config_id besides mode/α/λ's own: a configuration is the same at every seed.
IDENTITY_EXCLUDED = ("seed", "replicate", "config_id", "baseline_key")
MAX_BASELINES_PER_SEED = 3


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


def dunnett_baselines(n_shared: int) -> int:
    """Dunnett's allocation: with k arms compared against one control, the control gets √k times
    each arm's replicates -- as independent baseline trials per seed, 1 to MAX_BASELINES_PER_SEED."""
    return int(np.clip(round(math.sqrt(max(1, n_shared))), 1, MAX_BASELINES_PER_SEED))


def baselines_per_seed(spec: SweepSpec, n_shared: int) -> int:
    """The spec's ``baselines_per_seed`` with "auto" resolved for ``n_shared`` configurations."""
    value = spec.baselines_per_seed
    return dunnett_baselines(n_shared) if value == "auto" else int(value)


def baseline_arms(n_tasks: int, replicates: int) -> list[dict[str, Any]]:
    """A seed's independent arms: one plain arm, or ``replicates`` of them numbered by ``replicate``."""
    if replicates == 1:
        return [baseline_arm(n_tasks)]
    return [{**baseline_arm(n_tasks), "replicate": r} for r in range(replicates)]


def knob_combinations(spec: SweepSpec) -> list[dict[str, Any]]:
    keys = sorted(spec.knobs)
    return [dict(zip(keys, values)) for values in itertools.product(*(spec.knobs[k] for k in keys))]


def base_trial(spec: SweepSpec) -> dict[str, Any]:
    """The keys every trial shares: data, fixed GANConfig fields and the orchestrator keys."""
    return {"data": spec.data, **spec.fixed, "steps_per_iteration": spec.steps_per_iteration,
            "iterations": spec.iterations, "samples_kept": spec.samples_kept}


def expand_trials(spec: SweepSpec, n_tasks: int) -> list[dict[str, Any]]:
    """Every trial of a random/grid sweep as a flat dict (GANConfig fields + orchestrator keys).

    Order: for each knob combination and seed, the baseline arms first, then the shared
    configurations, so an interrupted sweep has its baselines.
    """
    shared = sample_shared_configs(spec, n_tasks)
    bases = baseline_arms(n_tasks, baselines_per_seed(spec, len(shared)))
    trials = []
    for knobs in knob_combinations(spec):
        for seed in spec.seeds:
            for arm in [*bases, *shared]:
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
    """Hash of everything except mode/alpha/lambdas/replicate (seed included): a trial's pairing
    key, shared by a seed's baseline replicates."""
    rest = {k: v for k, v in trial.items()
            if k not in ("mode", "alpha", "lambdas", "replicate", "config_id", "baseline_key")}
    return _digest(rest)


def with_identity(trial: dict[str, Any]) -> dict[str, Any]:
    return {**trial, "config_id": config_id(trial), "baseline_key": baseline_key(trial)}


def gan_fields(trial: dict[str, Any]) -> dict[str, Any]:
    """The GANConfig part of a trial dict (drops the orchestrator keys)."""
    out = {k: v for k, v in trial.items() if k not in ORCHESTRATOR_KEYS}
    if out.get("lambdas") is not None:
        out["lambdas"] = tuple(out["lambdas"])
    return out
