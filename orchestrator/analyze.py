"""``python -m orchestrator.analyze RUN_DIR [RUN_DIR ...] [--out DIR] [--metric fid]``

Answers "does sharing help, for which tasks, at which α and λ" from the Parquet results of one
or more sweeps (schema version 1, see the README), and writes report.html (self-contained),
report.md, benefit.csv, configs.csv and the PNG figures to ``--out`` (default ``<first run>/report``).

Decisions (the report repeats them):

* Benefit is "positive = sharing helped": baseline − shared for fid/kid (lower is better),
  shared − baseline for precision/recall/accuracy.
* Pairing: a shared trial (mode soft/hard) is paired with the independent trial of equal
  ``baseline_key`` (same seed, data and ordinary knobs; pooled run directories may pair with
  each other). All pairs of one configuration are compared at one iteration: the last that all
  of them reached (both trials with a finite metric on all their tasks). Under ASHA, seeds of a
  configuration stop at different rungs; comparing each pair at its own last iteration would
  mix iterations (early pairs at FID in the hundreds dominate), and dropping the early-stopped
  seeds would keep ASHA's survivors. configs.csv gives each configuration's ``iteration``.
  If several usable independent trials share a key, the one with most iterations is used.
* PBT (sweep.json ``spec.scheduler == "pbt"``): exploit copies weights and α across seeds, so
  pairs are not independent; the report and headline say so and give no verdicts.
* Excluded from the paired statistics, and counted in the report: diverged and ERROR trials,
  trials with no metrics yet (PENDING), shared trials whose key has no (usable) independent
  trial, pairs with no common iteration. Divergence is a cost of sharing, so it is also shown
  per configuration next to the baseline's own rate.
* Trials with status RUNNING are read as they stand (their metrics so far), compared with their
  baseline at the last iteration both reached; their number is reported. Files whose names start
  with "." or "_" (the writer's ``.tmp-*`` files) are ignored.
* Statistics per (configuration, task): mean paired benefit over seeds with a 95% percentile
  bootstrap CI (expanded for small n, see orchestrator/stats.py). One seed gives a point
  estimate, labelled as such.
* Headline verdicts (gain / NEGATIVE TRANSFER) are made only on estimates without selection:
  all shared configurations pooled, and each mode (soft / hard) pooled, with simultaneous 95%
  intervals (Student t over seeds, Bonferroni over tasks × groups; see headline_verdicts).
  benefit.csv's benefit/ci_low/ci_high are the pooled row of those (n_pairs: pairs pooled);
  best_alpha/best_mode name the exploratory best configuration (α = inf for hard sharing,
  the α → ∞ limit; the Parquet records 0 there).
* The best configuration (exploratory) is the one with the highest mean ΔMTL among
  configurations with at least 90% as many pairs as the best-covered one (a configuration that
  lost seeds to divergence cannot win on its survivors); its interval is optimistic (selected
  on the same seeds) and it gets no verdict.
* ΔMTL on kid divides by the task's median independent kid, not the pair's own (~0 or negative
  for the unbiased estimator).

Exit code 2 with one line on stderr for bad input (missing path, foreign directory, unknown
schema version, no baseline arm, everything diverged, unknown metric), before anything is written.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from orchestrator import stats
from orchestrator.schema import (DIVERGED, ERROR, FAILED_STATUSES, HARD, INDEPENDENT, METRIC_NAMES, METRICS_DIR,
                                 READABLE_SCHEMA_VERSIONS, REPORT_DIR, RUNNING, SWEEP_FILE, TRIALS_FILE, RunLocation,
                                 better, is_run_directory, is_uri, location_name, metrics_columns)
from trainables.cli import OneLineParser, UsageError

SWEEP_HINT = "python -m orchestrator.sweep"
BEST_MIN_COVERAGE = 0.9  # share of the best-covered configuration's pairs a "best" candidate must have
NO_VERDICT_PBT = "no verdict (PBT)"
KNOB_COLUMNS = ("data", "samples_per_task", "width", "z_dim", "lr", "batch_size", "gan_loss", "eval_samples",
               "steps_per_iteration")


class AnalysisError(UsageError):
    """Bad input for the analysis: the message is the one line printed before exit code 2."""


@dataclass
class RunData:
    """Trials of all pooled runs (one row per trial, positional index = trial number) and the
    chosen metric as a dense (trial, iteration, task) array (NaN where not reported)."""

    run_dirs: list[Path | str]  # local directories, or URIs such as s3://bucket/prefix/name
    metric: str
    trials: pd.DataFrame
    tasks: list[str]
    iterations: np.ndarray
    values: np.ndarray
    orphan_metric_rows: int = 0
    load_seconds: float = 0.0
    schedulers: list[str | None] = field(default_factory=list)  # per run: sweep.json spec.scheduler


@dataclass
class Analysis:
    data: RunData
    resamples: int
    pairs: pd.DataFrame            # one row per pair: shared, base (trial numbers), config, iteration, ...
    benefit: np.ndarray            # (P, K) paired benefit per task
    dmtl: np.ndarray               # (P,) ΔMTL per pair
    configs: pd.DataFrame          # one row per shared configuration, with stats
    best_config: str               # exploratory: the highest mean ΔMTL, selected on the same seeds
    best_table: pd.DataFrame       # benefit.csv: pooled benefit + family-wise CI, best config's α/mode
    pooled: pd.DataFrame           # per task + ΔMTL, over all shared configurations
    by_mode: pd.DataFrame          # per mode and task
    excluded: pd.DataFrame         # reason, shared, independent
    status_counts: pd.DataFrame
    divergence: pd.DataFrame       # per configuration incl. the baseline
    usable: np.ndarray             # (T,) bool
    last_iter: np.ndarray          # (T,) index of the last valid iteration, -1 if none
    verdicts: pd.DataFrame         # the headline's verdicts: see headline_verdicts
    n_eligible: int                # configurations the best was chosen among
    pbt_runs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stat_seconds: float = 0.0

    @property
    def tasks(self) -> list[str]:
        return self.data.tasks

    @property
    def metric(self) -> str:
        return self.data.metric


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------

def run_location(run_dir: Path | str) -> RunLocation:
    """A run directory: a local path, or a URI the sweep's --storage took (s3://bucket/prefix/name,
    with pyarrow's ?endpoint_override=...&scheme=http if needed)."""
    try:
        return RunLocation(run_dir)
    except (OSError, ValueError) as exc:
        raise AnalysisError(f"{run_dir}: {str(exc).splitlines()[0]}") from None


def _check_run_dir(path: Path | str) -> None:
    run = run_location(path)
    try:
        kind_is_dir, exists = run.is_dir(), run.exists()
        found = kind_is_dir and is_run_directory(run)
        children = [] if found or not kind_is_dir else [d for d in run.subdirectories() if is_run_directory(run, d)]
    except OSError as exc:
        raise AnalysisError(f"{path} cannot be read ({str(exc).splitlines()[0]})") from None
    if not exists:
        raise AnalysisError(f"run directory {path} does not exist; run `{SWEEP_HINT}` first and pass "
                            f"its <storage>/<name> directory")
    if not kind_is_dir:
        raise AnalysisError(f"{path} is not a directory; pass a sweep's <storage>/<name> directory")
    if not found:
        hint = (f" (it holds run directories: did you mean {run.uri(children[0])}?)" if children
                else f"; it must be written by `{SWEEP_HINT}`")
        raise AnalysisError(f"{path} is not a sweep run directory: no {TRIALS_FILE} and {METRICS_DIR}/ "
                            f"found{hint}")


def _check_schema_version(column: pa.ChunkedArray | pa.Array, where: Path | str) -> None:
    versions = set(pc.unique(column).to_pylist()) - {None}
    unknown = sorted(v for v in versions if v not in READABLE_SCHEMA_VERSIONS)
    if unknown:
        readable = ", ".join(map(str, READABLE_SCHEMA_VERSIONS))
        raise AnalysisError(f"{where}: schema_version {unknown[0]} is unknown to this analysis (it reads "
                            f"version {readable}); update the code or rerun the sweep with "
                            f"this version of `{SWEEP_HINT}`")


def _read_trials(run_dir: Path | str) -> pd.DataFrame:
    run = run_location(run_dir)
    path = run.uri(TRIALS_FILE)
    try:
        table = run.read_table(TRIALS_FILE)
    except (pa.ArrowInvalid, OSError) as exc:
        raise AnalysisError(f"{path} cannot be read as Parquet ({str(exc).splitlines()[0]})") from None
    missing = [c for c in ("schema_version", "trial_id", "config_id", "baseline_key", "status", "mode")
               if c not in table.column_names]
    if missing:
        raise AnalysisError(f"{path} is not a sweep trials table: missing column(s) {', '.join(missing)}")
    _check_schema_version(table["schema_version"], path)
    return table.to_pandas()


def read_scheduler(run_dir: Path | str) -> str | None:
    """The Tune scheduler a run used (sweep.json's spec.scheduler: fifo | asha | pbt), None if unknown."""
    try:
        record = json.loads(run_location(run_dir).read_text(SWEEP_FILE))
    except (OSError, ValueError, AnalysisError):
        return None
    spec = record.get("spec") if isinstance(record, dict) else None
    scheduler = spec.get("scheduler") if isinstance(spec, dict) else None
    return str(scheduler) if scheduler else None


def _read_metrics(run_dir: Path | str, metric: str) -> pa.Table:
    run = run_location(run_dir)
    metrics_dir = run.uri(METRICS_DIR)
    schema = metrics_columns("schema_version", "trial_id", "iteration", "task", metric)
    try:
        # pyarrow ignores names starting with "." or "_": the writer's .tmp- files are skipped.
        dataset = ds.dataset(run.sub(METRICS_DIR), filesystem=run.fs, format="parquet", schema=schema)
        table = dataset.to_table(columns=schema.names)
    except (pa.ArrowInvalid, OSError) as exc:
        raise AnalysisError(f"{metrics_dir} cannot be read as a Parquet dataset "
                            f"({str(exc).splitlines()[0]})") from None
    _check_schema_version(table["schema_version"], metrics_dir)
    return table


def _codes(column: pa.ChunkedArray, labels: pd.Index) -> np.ndarray:
    """Position of each value of a string column in ``labels`` (-1 if absent), via the column's
    dictionary so that the string lookup happens once per distinct value, not per row."""
    encoded = pc.dictionary_encode(column).combine_chunks()
    lookup = labels.get_indexer(pd.Index(encoded.dictionary.to_pylist()))
    return lookup[encoded.indices.to_numpy(zero_copy_only=False)]


def load_runs(run_dirs: list[Path | str], metric: str) -> RunData:
    """Read and pool the run directories into a :class:`RunData` (vectorised, no per-row Python)."""
    started = time.perf_counter()
    trial_frames, metric_tables = [], []
    for number, run_dir in enumerate(run_dirs):
        _check_run_dir(run_dir)
        frame = _read_trials(run_dir)
        frame["run"] = number
        frame["run_dir"] = str(run_dir)
        trial_frames.append(frame)
        metric_tables.append(_read_metrics(run_dir, metric))
    trials = pd.concat(trial_frames, ignore_index=True, sort=False)
    if trials.empty:
        raise AnalysisError(f"{run_dirs[0]}/trials.parquet has no trials yet; let `{SWEEP_HINT}` start "
                            f"some trials first")
    total_rows = sum(t.num_rows for t in metric_tables)
    if total_rows == 0 and trials["status"].isin(FAILED_STATUSES).all():
        raise _all_failed(trials, run_dirs)
    if total_rows == 0:
        raise AnalysisError(f"{run_dirs[0]}/metrics has no metric rows yet ({len(trials)} trials, none has "
                            f"finished an iteration); let `{SWEEP_HINT}` run at least one iteration")

    # task order: that of the trials' lambda_<task> columns (the sweep's order), then any others sorted
    task_names: list[str] = []
    for table in metric_tables:
        for name in pc.unique(table["task"]).to_pylist():
            if name is not None and name not in task_names:
                task_names.append(name)
    lam_order = [c[len("lambda_"):] for c in trials.columns if c.startswith("lambda_")]
    tasks = [t for t in lam_order if t in task_names] + sorted(t for t in task_names if t not in lam_order)
    task_index = pd.Index(tasks)
    iterations = np.unique(np.concatenate([pc.unique(t["iteration"]).to_numpy(zero_copy_only=False)
                                           for t in metric_tables if t.num_rows]))
    iterations = iterations[iterations > 0] if (iterations > 0).any() else iterations
    n_trials, n_iter, n_tasks = len(trials), len(iterations), len(tasks)
    values = np.full((n_trials, n_iter, n_tasks), np.nan)
    orphans = 0
    offset = 0
    for number, table in enumerate(metric_tables):
        n_run = len(trial_frames[number])
        if table.num_rows:
            trial_no = _codes(table["trial_id"], pd.Index(trial_frames[number]["trial_id"]))
            task_no = _codes(table["task"], task_index)
            it_no = np.searchsorted(iterations, table["iteration"].to_numpy(zero_copy_only=False))
            it_no = np.minimum(it_no, n_iter - 1)
            val = table[metric].to_numpy(zero_copy_only=False).astype(float)
            ok = (trial_no >= 0) & (task_no >= 0) & (iterations[it_no] == table["iteration"].to_numpy(zero_copy_only=False))
            orphans += int((~ok).sum())
            # a trial restored from a checkpoint may report an iteration twice: the later row wins
            # (rows are in file order, and files are written in time order)
            values[trial_no[ok] + offset, it_no[ok], task_no[ok]] = val[ok]
        offset += n_run
    if np.isnan(values).all():
        raise AnalysisError(f"metric {metric!r} has no values in {', '.join(map(str, run_dirs))} "
                            f"(e.g. accuracy needs labelled tasks); choose another --metric")
    return RunData(run_dirs=run_dirs, metric=metric, trials=trials, tasks=tasks, iterations=iterations,
                   values=values, orphan_metric_rows=orphans, load_seconds=time.perf_counter() - started,
                   schedulers=[read_scheduler(r) for r in run_dirs])


# ----------------------------------------------------------------------------------------------
# Pairing and statistics
# ----------------------------------------------------------------------------------------------

def valid_iterations(values: np.ndarray) -> np.ndarray:
    """(T, I) bool: the trial reported a finite metric for every task it has at that iteration."""
    finite = np.isfinite(values)
    has_task = finite.any(1, keepdims=True)  # (T, 1, K): tasks the trial reports at all
    return (finite | ~has_task).all(2) & finite.any(2)


def last_true(mask: np.ndarray) -> np.ndarray:
    """Index of the last True per row, -1 where none."""
    n = mask.shape[1]
    idx = n - 1 - np.argmax(mask[:, ::-1], axis=1)
    return np.where(mask.any(1), idx, -1)


def config_label(row: dict, tasks: list[str], varying: list[str]) -> str:
    mode = row["mode"]
    if mode == INDEPENDENT:
        return INDEPENDENT
    parts = [mode]
    if mode != HARD:
        parts.append(f"α={_fmt_num(row['alpha'])}")
    lams = [row.get(f"lambda_{t}", 1.0) for t in tasks]
    lams = [1.0 if (v is None or (isinstance(v, float) and math.isnan(v))) else v for v in lams]
    if len(set(lams)) > 1:
        parts.append("λ=(" + ",".join(_fmt_num(v) for v in lams) + ")")
    parts += [f"{k}={row[k]}" for k in varying]
    return " ".join(parts)


def _fmt_num(v: float) -> str:
    return f"{float(v):.3g}"


def analyze(data: RunData, resamples: int = 2000, rng_seed: int = 0) -> Analysis:
    """Pair trials, compute paired benefits, ΔMTL, bootstrap CIs, and the tables of the report."""
    started = time.perf_counter()
    trials = data.trials
    metric = data.metric
    values = data.values
    tasks = data.tasks
    n_trials = len(trials)
    status = trials["status"].astype(str).to_numpy()
    mode = trials["mode"].astype(str).to_numpy()
    is_base = mode == INDEPENDENT
    valid = valid_iterations(values)
    last_iter = last_true(valid)
    failed = np.isin(status, FAILED_STATUSES)
    no_metrics = ~failed & (last_iter < 0)
    usable = ~failed & ~no_metrics

    if failed.all():
        raise _all_failed(trials, data.run_dirs)
    if not is_base.any():
        raise AnalysisError(f"no baseline arm: {_runs(data)} has no independent (mode=independent) trials; "
                            f"rerun the sweep with the independent arm in the search space so that each "
                            f"shared trial has an independent trial of the same seed to compare with")
    if not (~is_base).any():
        raise AnalysisError(f"{_runs(data)} has only independent trials; rerun `{SWEEP_HINT}` with the "
                            f"shared modes (soft/hard) in the search space")
    if not (usable & is_base).any():
        raise AnalysisError(f"all {int(is_base.sum())} independent baseline trials in {_runs(data)} diverged, "
                            f"errored or have no metrics; rerun the sweep's independent arm")
    if not (usable & ~is_base).any():
        raise AnalysisError(f"all {int((~is_base).sum())} shared trials in {_runs(data)} diverged, errored or "
                            f"have no metrics; sharing never produced a model (lower alpha/lr and rerun)")

    # baseline per key: the usable independent trial with most valid iterations
    keys = trials["baseline_key"].astype(str).to_numpy()
    base_idx = np.flatnonzero(usable & is_base)
    base_frame = pd.DataFrame({"key": keys[base_idx], "trial": base_idx, "n": valid[base_idx].sum(1)})
    base_frame = base_frame.sort_values(["key", "n", "trial"], ascending=[True, False, True])
    chosen = base_frame.drop_duplicates("key")
    duplicate_bases = len(base_frame) - len(chosen)
    base_of_key = pd.Series(chosen["trial"].to_numpy(), index=chosen["key"].to_numpy())

    shared_idx = np.flatnonzero(usable & ~is_base)
    partner = base_of_key.reindex(keys[shared_idx]).to_numpy()
    has_partner = ~pd.isna(partner)
    no_key = ~np.isin(keys[shared_idx], keys[is_base])
    shared_paired = shared_idx[has_partner]
    base_paired = partner[has_partner].astype(np.int64)
    common = valid[shared_paired] & valid[base_paired]
    pair_last = last_true(common)
    ok = pair_last >= 0
    no_common = int((~ok).sum())
    shared_paired, base_paired, common, pair_last = shared_paired[ok], base_paired[ok], common[ok], pair_last[ok]
    if len(shared_paired) == 0:
        raise AnalysisError(f"no shared trial in {_runs(data)} has a usable independent trial with the same "
                            f"baseline_key (seed and knobs); rerun `{SWEEP_HINT}` with the independent arm for "
                            f"the same seeds")

    config_ids = trials["config_id"].astype(str).to_numpy()
    shared_configs = pd.Index(pd.unique(config_ids[~is_base]))
    n_cfg = len(shared_configs)
    pair_config = shared_configs.get_indexer(config_ids[shared_paired])
    # All pairs of a configuration are compared at one iteration, the last that all of them reached.
    # Under ASHA the seeds of a configuration stop at different rungs: mixing iterations lets a few
    # iteration-1 pairs (FID in the hundreds) dominate the mean, and keeping only the seeds ASHA let
    # go on would judge the configuration on the survivors of ASHA's own selection.
    config_cap = np.full(n_cfg, np.iinfo(np.int64).max)
    np.minimum.at(config_cap, pair_config, pair_last)
    capped = common & (np.arange(common.shape[1]) <= config_cap[pair_config][:, None])
    common_last = last_true(capped)
    ok = common_last >= 0  # False only with holes in the curves: nothing in common with the others
    off_config = int((~ok).sum())
    moved_back = int((ok & (common_last < pair_last)).sum())
    shared_paired, base_paired, pair_config, common_last = (shared_paired[ok], base_paired[ok], pair_config[ok],
                                                            common_last[ok])

    m_shared = values[shared_paired, common_last]  # (P, K)
    m_base = values[base_paired, common_last]
    benefit = stats.paired_benefit(m_shared, m_base, metric)
    relative_scale = None
    if metric in stats.UNSTABLE_RELATIVE:  # per-task median of the usable baselines at their last iteration
        relative_scale = pd.DataFrame(values[base_idx, last_iter[base_idx]]).median().to_numpy(float)
    dmtl = stats.delta_mtl(m_shared, m_base, metric, relative_scale)

    pairs = pd.DataFrame({
        "shared": shared_paired, "base": base_paired, "config": pair_config,
        "config_id": config_ids[shared_paired], "seed": trials["seed"].to_numpy()[shared_paired]
        if "seed" in trials else np.nan,
        "iteration": data.iterations[common_last], "dmtl": dmtl,
    })
    per_config = stats.clustered_bootstrap(np.column_stack([benefit, dmtl]), pair_config, base_paired, n_cfg,
                                           resamples=resamples, seed=rng_seed)

    # configuration table (one row per shared configuration, all columns vectorised)
    trial_config = shared_configs.get_indexer(config_ids)  # -1 for the baseline
    in_shared = trial_config >= 0
    first_row = pd.Series(np.flatnonzero(in_shared)).groupby(trial_config[in_shared]).first().to_numpy()
    first = trials.iloc[first_row]
    varying = [k for k in KNOB_COLUMNS if k in trials and trials.loc[~is_base, k].astype(str).nunique() > 1]

    def per_config_count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(trial_config[in_shared & mask], minlength=n_cfg)

    first_mode = first["mode"].astype(str).to_numpy()
    alpha = pd.to_numeric(first["alpha"], errors="coerce").to_numpy(float) if "alpha" in first else np.full(n_cfg, np.nan)
    n_cfg_trials = per_config_count(np.ones(n_trials, bool))
    n_cfg_diverged = per_config_count(status == DIVERGED)
    has_cap = config_cap < len(data.iterations)
    configs = pd.DataFrame({
        "config_id": shared_configs.to_numpy(),
        "label": [config_label(row, tasks, varying) for row in first.to_dict("records")],
        "mode": first_mode,
        "alpha": np.where(first_mode == HARD, np.inf, alpha),  # hard sharing is the α → ∞ limit
        "n_trials": n_cfg_trials,
        "n_pairs": per_config["n"],
        "n_diverged": n_cfg_diverged,
        "n_error": per_config_count(status == ERROR),
        "diverged_rate": n_cfg_diverged / np.maximum(n_cfg_trials, 1),
        "iteration": np.where(has_cap, data.iterations[np.where(has_cap, config_cap, 0)], np.nan),
        "dmtl": per_config["mean"][:, -1], "dmtl_lo": per_config["lo"][:, -1], "dmtl_hi": per_config["hi"][:, -1],
    })
    for t in tasks:
        lam = pd.to_numeric(first[f"lambda_{t}"], errors="coerce") if f"lambda_{t}" in first else pd.Series(1.0, first.index)
        configs[f"lambda_{t}"] = lam.fillna(1.0).to_numpy()
    for k, t in enumerate(tasks):
        configs[f"benefit_{t}"] = per_config["mean"][:, k]
        configs[f"lo_{t}"] = per_config["lo"][:, k]
        configs[f"hi_{t}"] = per_config["hi"][:, k]
    for knob in varying:
        configs[knob] = first[knob].to_numpy()
    # a configuration that lost seeds to divergence cannot win on its survivors
    min_pairs = max(1, math.ceil(BEST_MIN_COVERAGE * configs["n_pairs"].max()))
    eligible = (configs["n_pairs"] >= min_pairs) & configs["dmtl"].notna()
    if not eligible.any():
        eligible = configs["n_pairs"] > 0
    ranked = configs[eligible].sort_values("dmtl", ascending=False, na_position="last")
    best_config = str(ranked["config_id"].iloc[0])
    configs = configs.sort_values(["dmtl", "n_pairs"], ascending=[False, False], na_position="last")
    configs = configs.reset_index(drop=True)
    best = configs[configs["config_id"] == best_config].iloc[0]

    # pooled over all shared configurations, clustered by baseline trial (pairs of one seed share it)
    pooled_stats = stats.clustered_bootstrap(np.column_stack([benefit, dmtl]), np.zeros(len(benefit), np.int64),
                                             base_paired, 1, resamples=resamples, seed=rng_seed + 1)
    pooled = _summary_frame(["all shared"], tasks, pooled_stats)
    pair_mode = mode[shared_paired]
    modes = pd.Index(sorted(pd.unique(pair_mode)))
    mode_stats = stats.clustered_bootstrap(np.column_stack([benefit, dmtl]), modes.get_indexer(pair_mode),
                                           base_paired, len(modes), resamples=resamples, seed=rng_seed + 2)
    by_mode = _summary_frame(list(modes), tasks, mode_stats)
    pbt_runs = [str(r) for r, s in zip(data.run_dirs, data.schedulers) if s == "pbt"]
    verdicts = headline_verdicts(benefit, pair_mode, base_paired, tasks, pbt=bool(pbt_runs))

    best_table = pd.DataFrame({
        "task": tasks,
        "benefit": verdicts["benefit"].to_numpy()[:len(tasks)],  # the "all shared" rows come first
        "ci_low": verdicts["ci_low"].to_numpy()[:len(tasks)],
        "ci_high": verdicts["ci_high"].to_numpy()[:len(tasks)],
        "n_pairs": np.isfinite(benefit).sum(0),
        "best_alpha": best["alpha"],
        "best_mode": best["mode"],
    })

    # exclusions and statuses
    def count(mask: np.ndarray) -> tuple[int, int]:
        return int((mask & ~is_base).sum()), int((mask & is_base).sum())

    shared_unpaired_nokey = np.zeros(n_trials, bool)
    shared_unpaired_nokey[shared_idx[~has_partner & no_key]] = True
    shared_unpaired_badbase = np.zeros(n_trials, bool)
    shared_unpaired_badbase[shared_idx[~has_partner & ~no_key]] = True
    excluded_rows = [
        (DIVERGED, *count(status == DIVERGED)),
        (f"errored (status {ERROR})", *count(status == ERROR)),
        ("no metrics yet (pending)", *count(no_metrics)),
        ("unpaired: no independent trial with the same baseline_key", *count(shared_unpaired_nokey)),
        ("unpaired: its independent trial diverged/errored/has no metrics", *count(shared_unpaired_badbase)),
        ("no iteration reached by both trials of the pair", no_common, 0),
        ("no valid iteration at or before its configuration's common iteration", off_config, 0),
        ("duplicate independent trial for a baseline_key (not used)", 0, duplicate_bases),
    ]
    excluded = pd.DataFrame(excluded_rows, columns=["reason", "shared", INDEPENDENT])
    excluded = excluded[(excluded["shared"] > 0) | (excluded[INDEPENDENT] > 0)].reset_index(drop=True)
    status_counts = (pd.crosstab(pd.Series(status, name="status"),
                                 pd.Series(np.where(is_base, INDEPENDENT, "shared"), name="arm"))
                     .reset_index())
    status_counts.columns.name = None

    base_div = {"config_id": INDEPENDENT, "label": f"{INDEPENDENT} (baseline)", "n_trials": int(is_base.sum()),
                "n_diverged": int((is_base & (status == DIVERGED)).sum()),
                "n_error": int((is_base & (status == ERROR)).sum())}
    divergence = pd.concat([pd.DataFrame([base_div]), configs[["config_id", "label", "n_trials", "n_diverged",
                                                               "n_error"]]], ignore_index=True)
    divergence["diverged_rate"] = divergence["n_diverged"] / divergence["n_trials"].clip(lower=1)

    notes = []
    if pbt_runs:
        notes.append(f"PBT run(s) {', '.join(pbt_runs)}: exploit copies the weights (and α) of the best trials "
                     f"into others across seeds, so a shared trial and the independent trial of its seed are not "
                     f"an independent pair. The results describe the population; the intervals are descriptive, "
                     f"not valid confidence intervals, and no gain/negative-transfer verdict is given.")
    if moved_back:
        notes.append(f"{moved_back} pair(s) were compared before their own last common iteration, at their "
                     f"configuration's common iteration (the last one all its pairs reached: under ASHA, and "
                     f"for RUNNING trials, seeds stop at different iterations; see configs.csv 'iteration').")
    running = int((status == RUNNING).sum())
    if running:
        notes.append(f"{running} trial(s) were still RUNNING: their metrics so far are used, and their "
                     f"configuration is compared at the last iteration all its pairs reached.")
    if relative_scale is not None:
        notes.append(f"ΔMTL on {metric}: the unbiased {metric} of one trial can be ~0 or negative, so each task's "
                     f"benefit is divided by that task's median independent {metric} over all "
                     f"{len(base_idx)} usable baseline trials (at their last iteration), not by the pair's own "
                     f"baseline; a task whose median is <= 0 drops out of ΔMTL.")
    if data.orphan_metric_rows:
        notes.append(f"{data.orphan_metric_rows} metric row(s) belong to no trial in trials.parquet (a trial "
                     f"the writer had not recorded yet) and were ignored.")
    return Analysis(data=data, resamples=resamples, pairs=pairs, benefit=benefit, dmtl=dmtl,
                    configs=configs, best_config=best_config, best_table=best_table, pooled=pooled,
                    by_mode=by_mode, excluded=excluded, status_counts=status_counts, divergence=divergence,
                    usable=usable, last_iter=last_iter, verdicts=verdicts, n_eligible=int(eligible.sum()),
                    pbt_runs=pbt_runs, notes=notes, stat_seconds=time.perf_counter() - started)


def headline_verdicts(benefit: np.ndarray, pair_mode: np.ndarray, cluster: np.ndarray, tasks: list[str],
                      pbt: bool = False, level: float = 0.95) -> pd.DataFrame:
    """Gain / loss verdicts per task made without selection, with family-wise error control.

    Groups: all shared configurations pooled, and each sharing mode pooled when there are several.
    Units: seeds (pairs averaged within their baseline trial). Interval: Student-t at level
    ``1 - (1 - level) / m`` with m = tasks × groups (Bonferroni), so that the chance of any false
    verdict in the headline is <= 1 - level. Returns one row per (group, task), "all shared" first:
    group, task, benefit, ci_low, ci_high, n (seeds), m, verdict."""
    modes = sorted(pd.unique(pair_mode))
    names = ["all shared"] + (modes if len(modes) > 1 else [])
    rows = [np.arange(len(benefit))] + [np.flatnonzero(pair_mode == m) for m in names[1:]]
    group = np.concatenate([np.full(len(r), g) for g, r in enumerate(rows)])
    pick = np.concatenate(rows)
    units, unit_group = stats.cluster_units(benefit[pick], group, cluster[pick])
    family = len(tasks) * len(names)
    res = stats.t_interval(units, unit_group, len(names), level=1.0 - (1.0 - level) / family)
    frame = pd.DataFrame({
        "group": np.repeat(names, len(tasks)), "task": np.tile(tasks, len(names)),
        "benefit": res["mean"].ravel(), "ci_low": res["lo"].ravel(), "ci_high": res["hi"].ravel(),
        "n": np.repeat(res["n"], len(tasks)), "m": family})
    frame["verdict"] = [NO_VERDICT_PBT if pbt else verdict(lo, hi, n)
                        for lo, hi, n in zip(frame["ci_low"], frame["ci_high"], frame["n"])]
    return frame


def _all_failed(trials: pd.DataFrame, run_dirs: list[Path | str]) -> AnalysisError:
    errors = trials["error"].dropna().astype(str) if "error" in trials else pd.Series(dtype=str)
    first = f" (first error: {errors.iloc[0].splitlines()[0][:200]})" if len(errors) else ""
    return AnalysisError(f"all {len(trials)} trials diverged or errored in {', '.join(map(str, run_dirs))}; nothing "
                         f"to compare{first}. Fix the error, or lower lr/alpha if they diverged, and rerun "
                         f"`{SWEEP_HINT}`")


def _summary_frame(names: list[str], tasks: list[str], result: dict[str, np.ndarray]) -> pd.DataFrame:
    """Long table (group, task, benefit, ci_low, ci_high, n) from a bootstrap over [tasks..., ΔMTL]."""
    rows = []
    for g, name in enumerate(names):
        for k, task in enumerate(tasks + ["ΔMTL %"]):
            rows.append({"group": name, "task": task, "benefit": result["mean"][g, k],
                         "ci_low": result["lo"][g, k], "ci_high": result["hi"][g, k], "n": int(result["n"][g])})
    return pd.DataFrame(rows)


def _runs(data: RunData) -> str:
    return ", ".join(str(p) for p in data.run_dirs)


# ----------------------------------------------------------------------------------------------
# Headline and CLI
# ----------------------------------------------------------------------------------------------

def verdict(lo: float, hi: float, n: int) -> str:
    """'gain' / 'loss' (negative transfer) / 'unclear' / 'point estimate' for one CI."""
    if n < 2 or not np.isfinite(lo):
        return "point estimate"
    if lo > 0:
        return "gain"
    if hi < 0:
        return "loss"
    return "unclear"


def fmt_ci(mean: float, lo: float, hi: float, n: int, digits: int = 3) -> str:
    if not np.isfinite(mean):
        return "n/a"
    if n < 2 or not np.isfinite(lo):
        return f"{mean:+.{digits}g} point estimate (1 seed, no CI)"
    return f"{mean:+.{digits}g} [{lo:+.{digits}g}, {hi:+.{digits}g}]"


def headline(result: Analysis) -> list[str]:
    """The few lines printed to the terminal and shown at the top of the report.

    Verdicts (gain / NEGATIVE TRANSFER) come only from estimates without selection (all shared
    configurations pooled, and each mode pooled) with family-wise intervals; the best
    configuration is shown as exploratory, without a verdict."""
    metric = result.metric
    configs = result.configs
    lines = [f"Metric {metric} ({better(metric)} is better); benefit > 0 means sharing helped."]
    v = result.verdicts
    groups = list(dict.fromkeys(v["group"]))
    seeds = int(v["n"].iloc[0])
    scope = f"all {len(configs)} shared configurations pooled" + (
        f", and each mode pooled: {', '.join(groups[1:])}" if len(groups) > 1 else "")
    if result.pbt_runs:
        lines.append(f"PBT: exploit copies weights between seeds, so pairs are not independent: population "
                     f"estimates ({scope}, {seeds} seeds), no verdicts; intervals not valid.")
    elif seeds < 2:
        lines.append(f"Point estimates ({scope}; 1 seed, no interval, no verdict):")
    else:
        rough = f"; only {seeds} seeds, rough" if seeds < 5 else ""
        lines.append(f"Verdicts without selection ({scope}); simultaneous 95% intervals (Student t over "
                     f"{seeds} seeds, Bonferroni over {int(v['m'].iloc[0])} task×group tests{rough}):")
    shown = {"gain": "gain", "loss": "NEGATIVE TRANSFER", "unclear": "unclear (interval spans 0)",
             "point estimate": "point estimates", NO_VERDICT_PBT: "estimates"}
    for kind, title in shown.items():
        sel = v[v["verdict"] == kind]
        if sel.empty:
            continue
        parts = []
        for group in groups:
            rows = sel[sel["group"] == group]
            if rows.empty:
                continue
            if kind == "unclear":
                items = ", ".join(rows["task"])
            else:
                items = ", ".join(f"{r.task} {r.benefit:+.3g}" + (f" [{r.ci_low:+.3g}, {r.ci_high:+.3g}]"
                                                                   if np.isfinite(r.ci_low) else "")
                                  for r in rows.itertuples())
            parts.append(f"{group}: {items}")
        lines.append(f"  {title}: " + "; ".join(parts))
    pooled = result.pooled[result.pooled["task"] == "ΔMTL %"].iloc[0]
    lines.append(f"All {len(configs)} shared configurations pooled: ΔMTL (%) "
                 f"{fmt_ci(pooled['benefit'], pooled['ci_low'], pooled['ci_high'], int(pooled['n']))} "
                 f"(95% bootstrap CI).")
    best = configs[configs["config_id"] == result.best_config].iloc[0]
    n = int(best["n_pairs"])
    lines.append(f"Best configuration (exploratory: chosen as the best of {result.n_eligible} on the same seeds; "
                 f"its interval is optimistic; no verdict): {best['label']} — ΔMTL (%) "
                 f"{fmt_ci(best['dmtl'], best['dmtl_lo'], best['dmtl_hi'], n)} over {n} seeds, diverged "
                 f"{int(best['n_diverged'])}/{int(best['n_trials'])}.")
    if "asha" in result.data.schedulers:
        early = int((configs["iteration"] < result.data.iterations[-1]).sum())
        lines.append(f"ASHA: each configuration is compared at the last iteration all its seeds reached "
                     f"({early} of {len(configs)} before iteration {int(result.data.iterations[-1])}).")
    div = result.divergence
    shared_div = int(div["n_diverged"].iloc[1:].sum())
    shared_n = int(div["n_trials"].iloc[1:].sum())
    excluded_total = int(result.excluded[["shared", INDEPENDENT]].to_numpy().sum()) if len(result.excluded) else 0
    lines.append(f"Diverged: {shared_div}/{shared_n} shared vs {int(div['n_diverged'].iloc[0])}/"
                 f"{int(div['n_trials'].iloc[0])} independent trials; {excluded_total} trial(s) excluded in all.")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m orchestrator.analyze",
                            description="Does sharing help? Paired benefit per task with bootstrap CIs, ΔMTL, "
                                        "sensitivity to α/λ/mode, budget and learning curves, sample grids.")
    parser.add_argument("runs", nargs="+", help="run directories <storage>/<name> (pooled); a URI such as "
                        "s3://bucket/prefix/name is read in place")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default <first run>/report; for a URI ./results/<name>/report)")
    parser.add_argument("--metric", default="fid", help=f"one of {', '.join(METRIC_NAMES)} (default fid)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (>= 2000)")
    parser.add_argument("--rng-seed", type=int, default=0, help="seed of the bootstrap RNG")
    parser.add_argument("--top", type=int, default=10, help="rows of the top-configuration tables")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.metric not in METRIC_NAMES:
            raise AnalysisError(f"unknown --metric {args.metric!r}; choose one of {', '.join(METRIC_NAMES)}")
        if args.resamples < 2000:
            raise AnalysisError(f"--resamples must be >= 2000, got {args.resamples}")
        if args.top < 1:
            raise AnalysisError(f"--top must be >= 1, got {args.top}")
        runs = list(dict.fromkeys(r.rstrip("/") if is_uri(r) else Path(r).resolve() for r in args.runs))
        if args.out is not None:
            out = args.out
        elif isinstance(runs[0], Path):
            out = runs[0] / REPORT_DIR
        else:  # the report is written locally, where `aws s3 sync` would put the run
            out = Path("results") / location_name(runs[0]) / REPORT_DIR
        if out.exists() and not out.is_dir():
            raise AnalysisError(f"--out {out} exists and is not a directory")
        existing = next(p for p in (out, *out.parents) if p.exists())
        if not os.access(existing, os.W_OK):
            raise AnalysisError(f"--out {out}: {existing} is not writable; pass a writable --out DIR")
        data = load_runs(runs, args.metric)
        result = analyze(data, resamples=args.resamples, rng_seed=args.rng_seed)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from orchestrator import report  # matplotlib only when there is something to draw

    try:
        paths = report.write_report(result, out, top=args.top)
    except OSError as exc:
        print(f"error: cannot write the report to {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for line in headline(result):
        print(line)
    print(f"Report: {paths['html']} (also report.md, benefit.csv, configs.csv, figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
