"""Helpers for tests and benchmarks (like hydra's test_utils): run directories in the results
schema -- synthetic sweeps with a planted truth, hand-made runs -- and reading a run back, sweep
files, a free port. The sink's own files are tested against a real Tune, not these."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import yaml

import search_spaces as ss
from orchestrator.schema import (DIVERGED, ERROR, FEATURE, HARD, INDEPENDENT, METRICS_DIR, METRICS_SCHEMA, RUNNING,
                                 SCHEMA_VERSION, SOFT, SWEEP_FILE, TERMINATED, TRIALS_FILE, trials_schema)


REPO_ROOT = Path(__file__).resolve().parents[1]
# A "billion laughs" YAML: 10^9 strings once its aliases are expanded.
BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))


def free_port() -> int:
    """A TCP port nothing listens on now (on any interface)."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def write_space(directory: Path, name: str = "space", **changes: Any) -> str:
    """The smoke sweep file with top-level keys replaced (None deletes a key), written as
    ``directory/<name>.yaml``; returns its path."""
    raw = yaml.safe_load((ss.SPACES_DIR / "smoke.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    path = Path(directory) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def read_run(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """A local run directory read back: (metrics rows, trials, sweep.json)."""
    run_dir = Path(run_dir)
    metrics = pads.dataset(run_dir / METRICS_DIR, format="parquet").to_table().to_pandas()
    trials = pd.read_parquet(run_dir / TRIALS_FILE)
    return metrics, trials, json.loads((run_dir / SWEEP_FILE).read_text())


def sweep_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.sweep", *args]


def start_driver(args: list[str], log: Path) -> subprocess.Popen:
    """A sweep driver in its own session (the caller can kill its whole process group), its
    output in ``log``; it starts its own Ray (RAY_ADDRESS cleared)."""
    env = {**os.environ, "RAY_ADDRESS": ""}
    return subprocess.Popen(sweep_command(*args), cwd=REPO_ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def read_metrics(run_dir: Path) -> pd.DataFrame:
    """Every metrics row on disk now (a file may vanish while listing: a trial's parts are
    deleted once compacted, so list again)."""
    while True:
        files = sorted(p for p in (run_dir / METRICS_DIR).glob("*.parquet") if not p.name.startswith((".", "_")))
        try:
            tables = [pq.read_table(p) for p in files]
        except FileNotFoundError:
            continue
        if not tables:
            return pd.DataFrame(columns=["trial_id", "iteration", "task", "timestamp"])
        return pa.concat_tables(tables).to_pandas()


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly the columns of ``schema`` (missing ones null), cast to its types."""
    columns = [table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def write_hand_run(run: Path, trials: list[dict], curves: dict[str, dict[str, list[float]]]) -> None:
    """A run directory with hand-written trials (dicts of trials.parquet columns; the rest get
    defaults) and per-task metric curves ``{trial_id: {task: [fid per iteration]}}``."""
    tasks = list(next(iter(curves.values())).keys())
    rows = []
    for trial_id, per_task in curves.items():
        config_id = next(t["config_id"] for t in trials if t["trial_id"] == trial_id)
        for k, task in enumerate(tasks):
            for i, v in enumerate(per_task[task]):
                rows.append({"schema_version": SCHEMA_VERSION, "sweep": "hand", "trial_id": trial_id,
                             "config_id": config_id, "iteration": i + 1, "step": (i + 1) * 10, "task": task,
                             "task_index": k, "fid": v, "kid": v / 1000, "precision": 0.5, "recall": 0.5,
                             "accuracy": 0.9, "g_loss": 1.0, "d_loss": 1.0, "time_s": float(i),
                             "timestamp": datetime.fromtimestamp(1.7e9 + i, timezone.utc),
                             "final": i == len(per_task[task]) - 1})
    (run / METRICS_DIR).mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=METRICS_SCHEMA), run / METRICS_DIR / "part-0.parquet")
    defaults = {"schema_version": SCHEMA_VERSION, "sweep": "hand", "status": TERMINATED, "seed": 0, "alpha": 0.0,
                **{f"lambda_{t}": 1.0 for t in tasks}, "data": "digits", "width": 64, "lr": 1e-3, "batch_size": 64,
                "gan_loss": "hinge", "steps_per_iteration": 10, "node_ip": "127.0.0.1", "hostname": "h",
                "cpus": 1.0, "gpus": 0.0, "time_s": 1.0}
    frame = [{**defaults, "iterations": len(next(iter(curves[t["trial_id"]].values()))), **t} for t in trials]
    pq.write_table(pa.Table.from_pylist(frame, schema=trials_schema(tasks)), run / TRIALS_FILE)


COLLAPSE_FACTOR = 30.0  # a collapsed trial's metric, times a normal one's


def simulate_lognormal_metric(rng: np.random.Generator, shape: tuple[int, ...], collapsed: float = 0.0,
                              sd: float = 1.0, centre: float = 3.0) -> np.ndarray:
    """Trial metrics (FID-like, lower is better) for the planted-truth checks of the primary family:
    lognormal around ``centre`` with log SD ``sd``; a ``collapsed`` fraction of trials
    COLLAPSE_FACTOR times worse (the skew the issue's review measured)."""
    log_metric = np.log(centre) + rng.normal(0.0, sd, shape)
    log_metric += np.log(COLLAPSE_FACTOR) * (rng.random(shape) < collapsed)
    return np.exp(log_metric)


BenefitFn = Callable[[str, float, tuple[float, ...], int], float]


def _stable_hash(*parts: object) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class _Arm:
    """One synthetic trial's configuration and the benefit planted in it (per task)."""

    config_id: str
    mode: str
    alpha: float
    lambdas: tuple[float, ...]
    width: int
    seed: int
    planted: list[float]
    replicate: int = 0


def write_synthetic_run(run_dir: str | Path, *, tasks: tuple[str, ...] = ("0", "1", "2", "3"),
                        seeds: int = 5, alphas: tuple[float, ...] = (0.01, 0.1, 1.0),
                        lambdas: tuple[tuple[float, ...], ...] | None = None, hard: bool = True,
                        soft_alpha_zero: bool = False, feature_alphas: tuple[float, ...] = (),
                        widths: tuple[int, ...] = (64,),
                        benefit: dict[str, float] | BenefitFn | None = None, noise: float = 1.0,
                        pair_noise: float | None = None,
                        iterations: int = 10, early_stop_fraction: float = 0.2,
                        diverged_fraction: float = 0.05, error_fraction: float = 0.02,
                        running_fraction: float = 0.0, samples: str = "some", files: int = 4,
                        include_baseline: bool = True, rng_seed: int = 0, sweep: str = "synthetic",
                        with_accuracy: bool = True, copying_modes: tuple[str, ...] = (),
                        baselines_per_seed: int = 1) -> dict:
    """Write a run directory (``metrics/``, ``trials.parquet``, ``sweep.json``) with a planted truth.

    The final FID of a trial on task k is ``base_k + seed_effect[seed, k] - benefit(cfg, k) + e``
    with ``e ~ N(0, noise)`` independent per trial (``pair_noise`` instead, if given), and it
    approaches that level over iterations along a curve shared by all trials, so comparisons at
    equal iteration are fair and comparisons at different iterations are not. ``benefit`` is in FID
    units, positive = sharing helped; a dict gives a constant per task, a callable gets (mode,
    alpha, lambdas, task_index). A fraction of the shared trials stops early, diverges, errors or
    is still running. ``nn_ratio`` is ~1 (no copying) except for trials of ``copying_modes`` (~0.2).
    ``baselines_per_seed`` independent trials per seed (``replicate`` 0, 1, ...), each with its own noise.
    Returns the truth: ``{"benefit": {config_id: [per task]}, "trials": n, ...}``.
    """
    run_dir = Path(run_dir)
    rng = np.random.default_rng(rng_seed)
    arms = _synthetic_arms(tasks, seeds, alphas, lambdas, hard, soft_alpha_zero, widths, benefit, include_baseline,
                           feature_alphas, baselines_per_seed)
    fid = _synthetic_fid(rng, arms, seeds, widths, len(tasks), noise if pair_noise is None else pair_noise,
                         iterations)
    is_base = np.array([a.mode == INDEPENDENT for a in arms])
    status, done = _synthetic_outcomes(rng, is_base, iterations, early_stop_fraction,
                                       ((DIVERGED, diverged_fraction), (ERROR, error_fraction),
                                        (RUNNING, running_fraction)))
    trial_ids = np.array([f"t{n:06d}_{_stable_hash(sweep, n)[:6]}" for n in range(len(arms))])
    n_rows = _write_synthetic_metrics(rng, run_dir / METRICS_DIR, fid, done, trial_ids, arms, tasks, sweep, files,
                                      with_accuracy, copying_modes)
    final_fid = fid[np.arange(len(arms)), np.maximum(done, 1) - 1]  # (T, K)
    samples_path = _write_synthetic_samples(run_dir / "samples", samples, final_fid, done, arms, trial_ids, tasks)
    trials = _synthetic_trials(arms, tasks, sweep, trial_ids, status, done, final_fid, samples_path)
    pq.write_table(_conform(trials, trials_schema(list(tasks))), run_dir / TRIALS_FILE)
    (run_dir / SWEEP_FILE).write_text(json.dumps({"name": sweep, "synthetic": True, "seeds": seeds,
                                                    "tasks": list(tasks)}))
    truth = {a.config_id: a.planted for a in arms}
    return {"benefit": truth, "trials": len(arms), "metric_rows": n_rows, "tasks": list(tasks)}


def _synthetic_arms(tasks: tuple[str, ...], seeds: int, alphas: tuple[float, ...],
                    lambdas: tuple[tuple[float, ...], ...] | None, hard: bool, soft_alpha_zero: bool,
                    widths: tuple[int, ...], benefit: dict[str, float] | BenefitFn | None,
                    include_baseline: bool, feature_alphas: tuple[float, ...] = (),
                    baselines_per_seed: int = 1) -> list[_Arm]:
    """Every trial: each configuration (baseline replicates, soft at each α and λ, hard at each λ)
    × width × seed."""
    n_tasks = len(tasks)
    lambdas = lambdas if lambdas is not None else ((1.0,) * n_tasks,)
    benefit = benefit if benefit is not None else {t: 0.0 for t in tasks}
    benefit_fn: BenefitFn = (benefit if callable(benefit)
                             else (lambda mode, alpha, lam, k: float(benefit.get(tasks[k], 0.0))))
    configs: list[tuple[str, float, tuple[float, ...]]] = []
    if include_baseline:
        configs += [(INDEPENDENT, 0.0, (1.0,) * n_tasks)] * baselines_per_seed
    soft_alphas = ((0.0,) if soft_alpha_zero else ()) + tuple(alphas)
    configs += [(SOFT, a, lam) for a in soft_alphas for lam in lambdas]
    if hard:
        configs += [(HARD, 0.0, lam) for lam in lambdas]
    configs += [(FEATURE, a, lam) for a in feature_alphas for lam in lambdas]
    arms = []
    for width in widths:
        for position, (mode, alpha, lam) in enumerate(configs):
            config_id = INDEPENDENT if mode == INDEPENDENT else "c" + _stable_hash(mode, alpha, lam, width)
            planted = [0.0 if mode == INDEPENDENT else benefit_fn(mode, alpha, lam, k) for k in range(n_tasks)]
            replicate = position if mode == INDEPENDENT else 0  # the baselines come first
            arms += [_Arm(config_id, mode, alpha, lam, width, seed, planted, replicate) for seed in range(seeds)]
    return arms


def _synthetic_fid(rng: np.random.Generator, arms: list[_Arm], seeds: int, widths: tuple[int, ...], n_tasks: int,
                   noise: float, iterations: int) -> np.ndarray:
    """(T, I, K) FID: the trial's final level plus a decay shared by all trials."""
    base_level = 20.0 + 10.0 * np.arange(n_tasks)
    seed_effect = rng.normal(0.0, 5.0, size=(seeds, len(widths), n_tasks))
    planted = np.array([a.planted for a in arms])  # (T, K)
    seed_idx = np.array([a.seed for a in arms])
    width_idx = np.array([widths.index(a.width) for a in arms])
    trial_noise = rng.normal(0.0, noise, size=(len(arms), n_tasks))
    level = base_level + seed_effect[seed_idx, width_idx] - planted + trial_noise  # final fid, (T, K)
    curve = 40.0 * np.exp(-np.arange(1, iterations + 1) / 3.0)  # shared approach to the final level
    return level[:, None, :] + curve[None, :, None]


def _synthetic_outcomes(rng: np.random.Generator, is_base: np.ndarray, iterations: int, early_stop_fraction: float,
                        failures: tuple[tuple[str, float], ...]) -> tuple[np.ndarray, np.ndarray]:
    """(status, iterations done) per trial: some stopped early, some diverged/errored/running
    (baselines are kept clean unless asked)."""
    status = np.full(len(is_base), TERMINATED, dtype=object)
    done = np.full(len(is_base), iterations)
    u = rng.random(len(is_base))
    early = u < early_stop_fraction
    done[early] = rng.integers(1, iterations, size=early.sum()) if iterations > 1 else 1
    cut = early_stop_fraction
    for name, frac in failures:
        sel = (u >= cut) & (u < cut + frac) & ~is_base
        status[sel] = name
        done[sel] = (rng.integers(0, iterations, size=sel.sum()) if name != RUNNING
                     else rng.integers(1, iterations + 1, size=sel.sum()))
        cut += frac
    return status, done


def _write_synthetic_metrics(rng: np.random.Generator, metrics_dir: Path, fid: np.ndarray, done: np.ndarray,
                             trial_ids: np.ndarray, arms: list[_Arm], tasks: tuple[str, ...], sweep: str,
                             files: int, with_accuracy: bool, copying_modes: tuple[str, ...] = ()) -> int:
    """The metrics dataset in ``files`` parts, plus a half-written ``.tmp-`` file readers must
    ignore; returns the number of rows."""
    n_tasks = len(tasks)
    its = np.arange(1, fid.shape[1] + 1)
    t_idx, i_idx = np.nonzero(its[None, :] <= done[:, None])
    t_rep, i_rep = np.repeat(t_idx, n_tasks), np.repeat(i_idx, n_tasks)
    k_rep = np.tile(np.arange(n_tasks), len(t_idx))
    fid_v = fid[t_rep, i_rep, k_rep]
    n_rows = len(t_rep)

    def labels(codes: np.ndarray, values: np.ndarray) -> pa.Array:
        return pa.DictionaryArray.from_arrays(codes.astype(np.int32), values).cast(pa.string())

    columns = {
        "schema_version": pa.array(np.full(n_rows, SCHEMA_VERSION, np.int32)),
        "sweep": pa.array(np.full(n_rows, sweep, dtype=object), pa.string()),
        "trial_id": labels(t_rep, trial_ids), "group_id": pa.nulls(n_rows, pa.string()),
        "config_id": labels(t_rep, np.array([a.config_id for a in arms])),
        "iteration": pa.array(its[i_rep].astype(np.int32)), "step": pa.array(its[i_rep].astype(np.int64) * 100),
        "task": labels(k_rep, np.array(tasks)), "task_index": pa.array(k_rep.astype(np.int32)),
        "fid": pa.array(fid_v), "kid": pa.array(fid_v / 1000.0 + rng.normal(0, 1e-4, n_rows)),
        "precision": pa.array(np.clip(1.0 - fid_v / 100.0, 0, 1)),
        "recall": pa.array(np.clip(0.9 - fid_v / 120.0, 0, 1)),
        "accuracy": pa.array(np.clip(1.0 - fid_v / 80.0, 0, 1)) if with_accuracy else pa.nulls(n_rows, pa.float64()),
        "nn_ratio": pa.array(np.where(np.array([a.mode in copying_modes for a in arms], bool)[t_rep], 0.2, 1.0)
                             + rng.normal(0, 0.05, n_rows)),
        "copy_ct": pa.array(rng.normal(0, 1, n_rows)),
        "g_loss": pa.array(rng.normal(1.0, 0.1, n_rows)), "d_loss": pa.array(rng.normal(1.2, 0.1, n_rows)),
        "time_s": pa.array(its[i_rep] * 2.0),
        "timestamp": pa.array(((1.7e9 + its[i_rep] * 2.0) * 1e6).astype(np.int64)).cast(pa.timestamp("us", tz="UTC")),
        "final": pa.array(its[i_rep] == done[t_rep]),
    }
    table = pa.table(columns).cast(METRICS_SCHEMA)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, n_rows, files + 1).astype(int)
    for f in range(files):
        pq.write_table(table.slice(bounds[f], bounds[f + 1] - bounds[f]), metrics_dir / f"part-{f:05d}.parquet")
    (metrics_dir / ".tmp-part-99999.parquet").write_bytes(b"PAR1 not a complete file")
    return n_rows


def _write_synthetic_samples(samples_dir: Path, samples: str, final_fid: np.ndarray, done: np.ndarray,
                             arms: list[_Arm], trial_ids: np.ndarray, tasks: tuple[str, ...]) -> np.ndarray:
    """Sample grids (``samples``: none | some | all trials) and each trial's samples_path; one
    referenced file is missing, as after a node loss."""
    n_trials = len(arms)
    samples_path = np.full(n_trials, None, dtype=object)
    if samples == "none":
        return samples_path
    samples_dir.mkdir(parents=True, exist_ok=True)
    seed_idx = np.array([a.seed for a in arms])
    want = np.ones(n_trials, bool) if samples == "all" else (seed_idx == 0) | (np.arange(n_trials) < 50)
    for t in np.flatnonzero(want & (done > 0)):
        path = samples_dir / f"{trial_ids[t]}.npz"
        images = _synthetic_images(len(tasks), 16, quality=1.0 / (1.0 + final_fid[t].mean() / 20.0), seed=int(t))
        np.savez(path, images=images, tasks=np.array(tasks))
        samples_path[t] = str(path)
    missing = np.flatnonzero(~want)
    if len(missing):
        samples_path[missing[0]] = str(samples_dir / "lost.npz")
    return samples_path


def _synthetic_trials(arms: list[_Arm], tasks: tuple[str, ...], sweep: str, trial_ids: np.ndarray,
                      status: np.ndarray, done: np.ndarray, final_fid: np.ndarray,
                      samples_path: np.ndarray) -> pa.Table:
    """trials.parquet's rows (columns the generator does not model stay null)."""
    n, ran = len(arms), done > 0
    columns: dict[str, object] = {
        "schema_version": np.full(n, SCHEMA_VERSION, np.int32), "sweep": np.full(n, sweep, dtype=object),
        "trial_id": trial_ids, "group_id": np.full(n, None, dtype=object),
        "config_id": np.array([a.config_id for a in arms]),
        "baseline_key": np.array(["b" + _stable_hash(a.width, a.seed) for a in arms]), "status": status,
        "seed": np.array([a.seed for a in arms], np.int64),
        "replicate": np.array([a.replicate for a in arms], np.int64), "mode": np.array([a.mode for a in arms]),
        "alpha": np.array([a.alpha for a in arms], float),
        **{f"lambda_{task}": np.array([a.lambdas[k] for a in arms], float) for k, task in enumerate(tasks)},
        "data": np.full(n, "digits:classes=" + ",".join(tasks), dtype=object),
        "samples_per_task": pd.array([None] * n, dtype="Int64"), "width": np.array([a.width for a in arms], np.int64),
        "lr": np.full(n, 1e-3), "batch_size": np.full(n, 64, np.int64),
        "gan_loss": np.full(n, "nonsaturating", dtype=object), "steps_per_iteration": np.full(n, 100, np.int64),
        "iterations": done.astype(np.int64),
    }
    for k, task in enumerate(tasks):
        columns[f"fid_{task}"] = np.where(ran, final_fid[:, k], np.nan)
        columns[f"kid_{task}"] = np.where(ran, final_fid[:, k] / 1000.0, np.nan)
    columns.update({
        "fid_mean": np.where(ran, final_fid.mean(1), np.nan),
        "kid_mean": np.where(ran, final_fid.mean(1) / 1000.0, np.nan),
        "node_ip": np.full(n, "127.0.0.1", dtype=object), "hostname": np.full(n, "localhost", dtype=object),
        "cpus": np.full(n, 1.0), "gpus": np.full(n, 0.0), "time_s": done * 2.0,
        "checkpoint_path": np.full(n, None, dtype=object), "samples_path": samples_path,
        "error": np.where(status == ERROR, "RuntimeError: synthetic failure",
                          np.where(status == DIVERGED, "DivergenceError: NaN loss", None)),
    })
    return pa.Table.from_pandas(pd.DataFrame(columns), preserve_index=False)


def _synthetic_images(n_tasks: int, k: int, quality: float, seed: int, size: int = 16) -> np.ndarray:
    """Blobs per task (task k: a disc at a task-specific place), blurred by noise as quality drops."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1.0)
    out = np.empty((n_tasks, k, 1, size, size), np.float32)
    for t in range(n_tasks):
        cx, cy = 0.3 + 0.4 * (t % 2), 0.3 + 0.4 * ((t // 2) % 2)
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < 0.06).astype(np.float32) * 2 - 1
        noise = rng.normal(0, 1.0 - quality, size=(k, size, size))
        out[t, :, 0] = np.clip(disc[None] + noise, -1, 1)
    return out
