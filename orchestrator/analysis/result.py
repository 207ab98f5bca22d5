"""``analyze(data)``: the whole analysis as a composition of its steps, returning a frozen
:class:`Analysis` that the report only renders (conventions: CONVENTIONS.md)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from orchestrator.analysis import stats
from orchestrator.analysis.answer import Answer, answer
from orchestrator.analysis.estimates import (AlphaCurve, alpha_curve, benefit_table, budget_curves, choose_best,
                                             config_table, pooled_estimates)
from orchestrator.analysis.exclusions import divergence_table, exclusion_table, status_table
from orchestrator.analysis.load import RunData
from orchestrator.analysis.pairing import Pairing, baseline_values, pair_trials, trial_arms
from orchestrator.analysis.verdicts import headline_verdicts
from orchestrator.schema import RUNNING


@dataclass(frozen=True)
class Analysis:
    """Everything the report shows; P pairs, T trials, K tasks."""

    data: RunData
    resamples: int
    pairs: pd.DataFrame            # one row per pair: shared, base (trial numbers), config, iteration, ...
    benefit: np.ndarray            # (P, K) paired benefit per task
    dmtl: np.ndarray               # (P,) ΔMTL per pair
    configs: pd.DataFrame          # configs.csv: one row per shared configuration, with stats
    best_config: str               # exploratory: the highest mean ΔMTL, selected on the same seeds
    benefit_table: pd.DataFrame    # benefit.csv: pooled benefit + family-wise CI, best config's α/mode
    pooled: pd.DataFrame           # per task + ΔMTL, over all shared configurations
    by_mode: pd.DataFrame          # per mode and task
    excluded: pd.DataFrame         # reason, shared, independent
    status_counts: pd.DataFrame
    divergence: pd.DataFrame       # per configuration incl. the baseline
    usable: np.ndarray             # (T,) bool
    last_iter: np.ndarray          # (T,) index of the last valid iteration, -1 if none
    verdicts: pd.DataFrame         # the headline's verdicts (orchestrator.analysis.verdicts)
    n_eligible: int                # configurations the best was chosen among
    alpha_curve: AlphaCurve | None  # benefit vs α
    budget: dict[str, tuple[np.ndarray, np.ndarray]]  # per arm: (k, quantiles of the best of k trials)
    answer: Answer | None = None   # the primary family per data regime (None under PBT: no verdicts)
    pbt_runs: list[str] = field(default_factory=list)
    notes: tuple[str, ...] = ()
    stat_seconds: float = 0.0

    @property
    def tasks(self) -> list[str]:
        return self.data.tasks

    @property
    def metric(self) -> str:
        return self.data.metric

    @property
    def best(self) -> pd.Series:
        """The best configuration's row of ``configs``."""
        return self.configs[self.configs["config_id"] == self.best_config].iloc[0]


def _paired_values(data: RunData, pairing: Pairing) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(benefit (P, K), ΔMTL (P,), the per-task ΔMTL denominator or None: the pair's own baseline,
    the mean of its seed's baseline replicates)."""
    m_shared = data.values[pairing.shared, pairing.iteration]
    m_base = baseline_values(data.values, pairing)
    scale = None
    if data.metric in stats.UNSTABLE_RELATIVE:  # per-task median of the usable baselines at their last iteration
        scale = pd.DataFrame(data.values[pairing.baselines, pairing.last_iter[pairing.baselines]]).median()
        scale = scale.to_numpy(float)
    return (stats.paired_benefit(m_shared, m_base, data.metric),
            stats.delta_mtl(m_shared, m_base, data.metric, scale), scale)


def _pairs_frame(data: RunData, pairing: Pairing, dmtl: np.ndarray) -> pd.DataFrame:
    trials = data.trials
    return pd.DataFrame({
        "shared": pairing.shared, "base": pairing.base, "config": pairing.config,
        "config_id": trials["config_id"].astype(str).to_numpy()[pairing.shared],
        "seed": trials["seed"].to_numpy()[pairing.shared] if "seed" in trials else np.nan,
        "iteration": data.iterations[pairing.iteration], "dmtl": dmtl,
    })


def _notes(data: RunData, pairing: Pairing, pbt_runs: list[str], scale: np.ndarray | None,
           primary: Answer | None = None) -> tuple[str, ...]:
    """What a reader must know about this particular run (the general conventions are in the report)."""
    metric, notes = data.metric, []
    if primary is not None and len(primary.regimes) > 1:
        regimes = ", ".join(r.regime for r in primary.regimes)
        notes.append(f"This run has {len(primary.regimes)} data regimes (samples_per_task {regimes}): the answer "
                     f"and its curves over log α analyse each on its own; the secondary sections (verdicts without "
                     f"selection, ΔMTL, the best configuration, benefit vs α) pool them, so read those per "
                     f"configuration (each configuration belongs to one regime) rather than pooled.")
    if pbt_runs:
        notes.append(f"PBT run(s) {', '.join(pbt_runs)}: exploit copies the weights (and α) of the best trials "
                     f"into others across seeds, so a shared trial and the independent trial of its seed are not "
                     f"an independent pair. The results describe the population; the intervals are descriptive, "
                     f"not valid confidence intervals, and no gain/negative-transfer verdict is given.")
    if pairing.moved_back:
        notes.append(f"{pairing.moved_back} pair(s) were compared before their own last common iteration, at their "
                     f"configuration's common iteration (the last one all its pairs reached: under ASHA, and "
                     f"for RUNNING trials, seeds stop at different iterations; see configs.csv 'iteration').")
    running = int((data.trials["status"].astype(str) == RUNNING).sum())
    if running:
        notes.append(f"{running} trial(s) were still RUNNING: their metrics so far are used, and their "
                     f"configuration is compared at the last iteration all its pairs reached.")
    if scale is not None:
        notes.append(f"ΔMTL on {metric}: the unbiased {metric} of one trial can be ~0 or negative, so each task's "
                     f"benefit is divided by that task's median independent {metric} over all "
                     f"{len(pairing.baselines)} usable baseline trials (at their last iteration), not by the pair's "
                     f"own baseline; a task whose median is <= 0 drops out of ΔMTL.")
    if data.orphan_metric_rows:
        notes.append(f"{data.orphan_metric_rows} metric row(s) belong to no trial in trials.parquet (a trial "
                     f"the writer had not recorded yet) and were ignored.")
    return tuple(notes)


def analyze(data: RunData, resamples: int = 2000, rng_seed: int = 0, test: str = "t") -> Analysis:
    """Pair trials, compute paired benefits, ΔMTL, every estimate and the verdicts (the primary
    family's ``test``: ``t`` or ``signflip``, see orchestrator.analysis.inference)."""
    started = time.perf_counter()
    pairing = pair_trials(data)
    benefit, dmtl, scale = _paired_values(data, pairing)
    status, mode, is_base = trial_arms(data.trials)
    configs = config_table(data, pairing, benefit, dmtl, resamples, rng_seed)
    best_config, n_eligible = choose_best(configs)
    pair_mode = mode[pairing.shared]
    pooled, by_mode = pooled_estimates(benefit, dmtl, pair_mode, pairing.base, data.tasks, resamples, rng_seed)
    pbt_runs = [str(r) for r, s in zip(data.run_dirs, data.schedulers) if s == "pbt"]
    verdicts = headline_verdicts(benefit, pair_mode, pairing.base, data.tasks, pbt=bool(pbt_runs))
    best = configs[configs["config_id"] == best_config].iloc[0]
    primary = None if pbt_runs else answer(data, pairing, dict(zip(configs["config_id"], configs["label"])), test)
    table = benefit_table(data.tasks, verdicts, benefit, best)
    if primary is not None:  # benefit.csv: the verdict columns per (regime, task), then the pooled estimates
        table = primary.table().merge(table, on="task", how="left")
    return Analysis(
        data=data, resamples=resamples, pairs=_pairs_frame(data, pairing, dmtl), benefit=benefit, dmtl=dmtl,
        configs=configs, best_config=best_config, benefit_table=table, answer=primary,
        pooled=pooled, by_mode=by_mode, excluded=exclusion_table(status, is_base, pairing),
        status_counts=status_table(status, is_base), divergence=divergence_table(status, is_base, configs),
        usable=pairing.usable, last_iter=pairing.last_iter, verdicts=verdicts, n_eligible=n_eligible,
        alpha_curve=alpha_curve(data, pairing, benefit, dmtl, resamples, rng_seed),
        budget=budget_curves(data, pairing), pbt_runs=pbt_runs, notes=_notes(data, pairing, pbt_runs, scale, primary),
        stat_seconds=time.perf_counter() - started)
