"""Run directories read into one dense array: :func:`load_runs` returns a :class:`RunData`.

Files whose names start with "." or "_" (the sink's ``.tmp-*`` files) are ignored; a trial
restored from a checkpoint may report an iteration twice, and the later row wins.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from orchestrator.schema import (DIVERGED, ERROR, FAILED_STATUSES, METRICS_DIR, PENDING,
                                 READABLE_SCHEMA_VERSIONS, RUNNING, SWEEP_FILE, TRIALS_FILE, RunLocation,
                                 is_run_directory, metrics_columns,
                                 status_in_current_case)
from trainables.cli import UsageError

SWEEP_HINT = "python -m orchestrator.sweep"
COPY_METRIC = "nn_ratio"
TRIAL_COLUMNS = ("schema_version", "trial_id", "config_id", "baseline_key", "status", "mode")


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
    nn_ratio: np.ndarray | None = None  # (trial, iteration, task) copying measure; all NaN before schema 2
    load_seconds: float = 0.0
    schedulers: list[str | None] = field(default_factory=list)  # per run: sweep.json spec.scheduler
    confirms: list[dict | None] = field(default_factory=list)  # per run: sweep.json confirm (explore → confirm)

    def runs_text(self) -> str:
        return ", ".join(str(p) for p in self.run_dirs)


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
        exists, is_dir = run.exists(), run.is_dir()
        found = is_dir and is_run_directory(run)
        children = [] if found or not is_dir else [d for d in run.subdirectories() if is_run_directory(run, d)]
    except OSError as exc:
        raise AnalysisError(f"{path} cannot be read ({str(exc).splitlines()[0]})") from None
    if not exists:
        raise AnalysisError(f"run directory {path} does not exist; run `{SWEEP_HINT}` first and pass "
                            f"its <storage>/<name> directory")
    if not is_dir:
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
    missing = [c for c in TRIAL_COLUMNS if c not in table.column_names]
    if missing:
        raise AnalysisError(f"{path} is not a sweep trials table: missing column(s) {', '.join(missing)}")
    _check_schema_version(table["schema_version"], path)
    frame = table.to_pandas()
    frame["status"] = frame["status"].map(status_in_current_case)  # version 1 wrote "diverged"
    return frame


def _sweep_record(run_dir: Path | str) -> dict | None:
    """A run's sweep.json as a dict, None if it is missing or unreadable."""
    try:
        record = json.loads(run_location(run_dir).read_text(SWEEP_FILE))
    except (OSError, ValueError, AnalysisError):
        return None
    return record if isinstance(record, dict) else None


def read_scheduler(run_dir: Path | str) -> str | None:
    """The Tune scheduler a run used (sweep.json's spec.scheduler: fifo | asha | pbt), None if unknown."""
    record = _sweep_record(run_dir) or {}
    spec = record.get("spec")
    scheduler = spec.get("scheduler") if isinstance(spec, dict) else None
    return str(scheduler) if scheduler else None


def read_confirm(run_dir: Path | str) -> dict | None:
    """sweep.json's ``confirm`` record of a confirmation run (orchestrator.confirm), else None."""
    confirm = (_sweep_record(run_dir) or {}).get("confirm")
    return confirm if isinstance(confirm, dict) and isinstance(confirm.get("chosen"), dict) else None


def _read_metrics(run_dir: Path | str, metric: str) -> pa.Table:
    """The run's metric rows. A Parquet file without the metrics columns is not the sweep's: it
    is skipped with a warning; a file that cannot be read is named in the one-line error."""
    run = run_location(run_dir)
    metrics_dir = run.uri(METRICS_DIR)
    # nn_ratio (the copying check) always comes along; a version-1 file reads it as null
    schema = metrics_columns("schema_version", "trial_id", "iteration", "task",
                             *dict.fromkeys((metric, COPY_METRIC)))
    try:
        # parquet_files leaves out names starting with "." or "_" (the writer's .tmp- files).
        paths = run.parquet_files(METRICS_DIR)
    except OSError as exc:
        raise AnalysisError(f"{metrics_dir} cannot be listed ({str(exc).splitlines()[0]})") from None
    ours = []
    for path in paths:
        where = run.uri(METRICS_DIR, path.rsplit("/", 1)[-1])
        try:
            names = pq.read_schema(path, filesystem=run.fs).names
        except (pa.ArrowInvalid, OSError) as exc:
            raise AnalysisError(f"{where} cannot be read ({str(exc).splitlines()[0]}); move it out of "
                                f"{METRICS_DIR}/ (its rows are then left out), or `{SWEEP_HINT} --resume` the "
                                f"run, which sets it aside") from None
        missing = [c for c in schema.names if c not in names and c != COPY_METRIC]  # version 1 lacks it
        if missing:
            print(f"warning: ignoring {where}: not a metrics file of the sweep (no column {missing[0]})",
                  file=sys.stderr)
            continue
        ours.append(path)
    try:
        table = ds.dataset(ours, filesystem=run.fs, format="parquet", schema=schema).to_table(columns=schema.names)
    except (pa.ArrowInvalid, OSError) as exc:
        raise AnalysisError(f"{metrics_dir} cannot be read as a Parquet dataset "
                            f"({str(exc).splitlines()[0]})") from None
    _check_schema_version(table["schema_version"], metrics_dir)
    return table


def all_failed_error(trials: pd.DataFrame, run_dirs: list[Path | str]) -> AnalysisError:
    errors = trials["error"].dropna().astype(str) if "error" in trials else pd.Series(dtype=str)
    first = f" (first error: {errors.iloc[0].splitlines()[0][:200]})" if len(errors) else ""
    return AnalysisError(f"all {len(trials)} trials diverged or errored in {', '.join(map(str, run_dirs))}; nothing "
                         f"to compare{first}. {what_to_do(trials)}")


def what_to_do(trials: pd.DataFrame) -> str:
    """Advice for trials without a model, by why: training advice only for the diverged ones
    (a trial that errored -- a full disk, a lost node -- or never finished says nothing about
    lr or alpha)."""
    status = trials["status"] if "status" in trials else pd.Series(dtype=str)
    advice = []
    if (status == ERROR).any():
        advice.append(f"fix the error and `{SWEEP_HINT} --resume` the sweep (errored trials are retried)")
    if status.isin([PENDING, RUNNING]).any():
        advice.append(f"{int(status.isin([PENDING, RUNNING]).sum())} trial(s) never finished: "
                      f"`{SWEEP_HINT} --resume` the sweep")
    if (status == DIVERGED).any():
        advice.append("lower lr/alpha for the diverged ones and rerun")
    text = "; ".join(advice) or f"rerun `{SWEEP_HINT}`"
    return text[0].upper() + text[1:]


def _codes(column: pa.ChunkedArray, labels: pd.Index) -> np.ndarray:
    """Position of each value of a string column in ``labels`` (-1 if absent), via the column's
    dictionary so that the string lookup happens once per distinct value, not per row."""
    encoded = pc.dictionary_encode(column).combine_chunks()
    lookup = labels.get_indexer(pd.Index(encoded.dictionary.to_pylist()))
    return lookup[encoded.indices.to_numpy(zero_copy_only=False)]


def _task_order(trials: pd.DataFrame, metric_tables: list[pa.Table]) -> list[str]:
    """The order of the trials' lambda_<task> columns (the sweep's order), then any others sorted."""
    names: list[str] = []
    for table in metric_tables:
        for name in pc.unique(table["task"]).to_pylist():
            if name is not None and name not in names:
                names.append(name)
    lam_order = [c[len("lambda_"):] for c in trials.columns if c.startswith("lambda_")]
    return [t for t in lam_order if t in names] + sorted(t for t in names if t not in lam_order)


def _iterations(metric_tables: list[pa.Table]) -> np.ndarray:
    iterations = np.unique(np.concatenate([pc.unique(t["iteration"]).to_numpy(zero_copy_only=False)
                                           for t in metric_tables if t.num_rows]))
    return iterations[iterations > 0] if (iterations > 0).any() else iterations


def _dense_values(trial_frames: list[pd.DataFrame], metric_tables: list[pa.Table], metric: str,
                  tasks: list[str], iterations: np.ndarray) -> tuple[np.ndarray, int]:
    """The (trial, iteration, task) array of the metric (NaN where missing) and the number of rows
    that belong to no known trial, task or iteration (vectorised, no per-row Python)."""
    n_iter = len(iterations)
    values = np.full((sum(len(f) for f in trial_frames), n_iter, len(tasks)), np.nan)
    task_index = pd.Index(tasks)
    orphans, offset = 0, 0
    for frame, table in zip(trial_frames, metric_tables):
        if table.num_rows:
            trial_no = _codes(table["trial_id"], pd.Index(frame["trial_id"]))
            task_no = _codes(table["task"], task_index)
            iteration = table["iteration"].to_numpy(zero_copy_only=False)
            it_no = np.minimum(np.searchsorted(iterations, iteration), n_iter - 1)
            val = table[metric].to_numpy(zero_copy_only=False).astype(float)
            ok = (trial_no >= 0) & (task_no >= 0) & (iterations[it_no] == iteration)
            orphans += int((~ok).sum())
            # rows are in file order and files in time order: a repeated iteration's later row wins
            values[trial_no[ok] + offset, it_no[ok], task_no[ok]] = val[ok]
        offset += len(frame)
    return values, orphans


def _read_run(number: int, run_dir: Path | str, metric: str) -> tuple[pd.DataFrame, pa.Table]:
    _check_run_dir(run_dir)
    frame = _read_trials(run_dir)
    frame["run"] = number
    frame["run_dir"] = str(run_dir)
    return frame, _read_metrics(run_dir, metric)


def load_runs(run_dirs: list[Path | str], metric: str) -> RunData:
    """Read and pool the run directories; AnalysisError (one line) for anything unusable."""
    started = time.perf_counter()
    trial_frames, metric_tables = zip(*[_read_run(n, r, metric) for n, r in enumerate(run_dirs)])
    trials = pd.concat(trial_frames, ignore_index=True, sort=False)
    if trials.empty:
        raise AnalysisError(f"{run_dirs[0]}/{TRIALS_FILE} has no trials yet; let `{SWEEP_HINT}` start "
                            f"some trials first")
    if sum(t.num_rows for t in metric_tables) == 0:
        if trials["status"].isin(FAILED_STATUSES).all():
            raise all_failed_error(trials, run_dirs)
        raise AnalysisError(f"{run_dirs[0]}/{METRICS_DIR} has no metric rows yet ({len(trials)} trials, none has "
                            f"finished an iteration); let `{SWEEP_HINT}` run at least one iteration")
    tasks = _task_order(trials, metric_tables)
    iterations = _iterations(metric_tables)
    values, orphans = _dense_values(list(trial_frames), list(metric_tables), metric, tasks, iterations)
    nn_ratio, _ = _dense_values(list(trial_frames), list(metric_tables), COPY_METRIC, tasks, iterations)
    if np.isnan(values).all():
        raise AnalysisError(f"metric {metric!r} has no values in {', '.join(map(str, run_dirs))} "
                            f"(e.g. accuracy needs labelled tasks); choose another --metric")
    return RunData(run_dirs=run_dirs, metric=metric, trials=trials, tasks=tasks, iterations=iterations,
                   values=values, orphan_metric_rows=orphans, nn_ratio=nn_ratio,
                   load_seconds=time.perf_counter() - started, schedulers=[read_scheduler(r) for r in run_dirs],
                   confirms=[read_confirm(r) for r in run_dirs])
