"""Explore → confirm: the configurations an exploration run chose (each task's best, and the best
overall), re-run with the baseline on fresh seeds, so that ``python -m orchestrator.analyze
EXPLORE_DIR CONFIRM_DIR`` judges them on seeds that played no part in choosing them.

The confirmation run's sweep.json carries ``confirm``: ``{"explore": EXPLORE_DIR, "chosen":
{task: config_id}, "overall": config_id}``; the analysis reads it (analysis.load.read_confirm).
Pure apart from reading the exploration run: no Ray.
"""
from __future__ import annotations

import json
from typing import Any

import search_spaces as ss
from orchestrator.schema import SWEEP_FILE, RunLocation
from trainables.cli import UsageError

CONFIRM_KEY = "confirm"


def chosen_configurations(explore_dir: str) -> dict[str, Any]:
    """What the exploration chose: {"chosen": {task: config_id}, "overall": config_id}. With several
    data regimes, each regime's pick per task, keyed ``<regime>:<task>`` (``10:2``)."""
    from orchestrator.analysis import analyze, load_runs
    from orchestrator.analysis.load import AnalysisError

    try:
        result = analyze(load_runs([explore_dir], "fid"))
    except AnalysisError as exc:
        raise UsageError(f"--confirm {explore_dir}: {exc}") from None
    if result.answer is None:
        raise UsageError(f"--confirm {explore_dir}: a PBT run has no per-configuration comparison to confirm")
    regimes = result.answer.regimes
    chosen = {(t.name if len(regimes) == 1 else f"{regime.regime}:{t.name}"): cid
              for regime in regimes for t, cid in zip(regime.tests, regime.best_ids) if cid}
    return {"explore": str(explore_dir), "chosen": chosen, "overall": result.best_config}


def explore_trials(explore_dir: str) -> list[dict[str, Any]]:
    """The expanded trials sweep.json recorded for the exploration run."""
    run = RunLocation(explore_dir)
    try:
        record = json.loads(run.read_text(SWEEP_FILE))
        return list(record["trials"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"--confirm {explore_dir}: no readable {SWEEP_FILE} with its trials "
                         f"(an optuna run draws its trials while it runs and cannot be confirmed)") from None


def confirm_trials(trials: list[dict[str, Any]], config_ids: list[str], seeds: list[int]) -> list[dict[str, Any]]:
    """For every fresh seed: the baseline arms (as many replicates per seed as the exploration
    ran), then each chosen configuration, as trial dicts with their identity recomputed
    (config_id is seed-free, so a chosen configuration keeps its id)."""
    replicates = 1 + max((int(t.get("replicate", 0)) for t in trials), default=0)
    templates = {}
    for trial in trials:
        if trial.get("config_id") in config_ids and trial["config_id"] not in templates:
            templates[trial["config_id"]] = trial
    missing = [c for c in config_ids if c not in templates]
    if missing:
        raise UsageError(f"--confirm: configuration {missing[0]} is not among the exploration's trials")
    out = []
    for seed in seeds:
        baselines_done = set()
        for cid in dict.fromkeys(config_ids):
            plain = {k: v for k, v in templates[cid].items() if k not in ("config_id", "baseline_key")}
            plain["seed"] = int(seed)
            bases = [ss.with_identity({**plain, **arm})
                     for arm in ss.baseline_arms(len(plain.get("lambdas") or [1.0]), replicates)]
            if bases[0]["baseline_key"] not in baselines_done:
                baselines_done.add(bases[0]["baseline_key"])
                out += bases
            out.append(ss.with_identity(plain))
    return out
