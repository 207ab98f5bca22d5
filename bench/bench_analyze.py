"""Benchmark of `python -m orchestrator.analyze` on 1M metric rows (not a test).

Generates a run directory in the Parquet results schema (v1): ~10k trials x 25 iterations x 4
tasks (1 independent arm + 1001 shared configurations x 10 seeds), then times
  - the baseline: a plain pyarrow read of the whole metrics dataset and trials.parquet,
  - loading (orchestrator.analysis.load_runs), the statistics (analyze), the report (figures,
    HTML, Markdown, CSV), and the whole command end to end in a fresh interpreter,
and prints seconds and the ratio to the baseline. Goal: end to end <= 10 s on 2 cores.

    .venv/bin/python bench/bench_analyze.py [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from orchestrator import analysis, report, testing  # noqa: E402


def generate(run: Path, files: int) -> dict:
    rng = np.random.default_rng(0)
    lambdas = tuple(tuple(float(x) for x in np.round(rng.uniform(0.5, 2.0, 4), 2)) for _ in range(91))
    alphas = tuple(float(a) for a in np.geomspace(1e-3, 10, 9))
    return testing.write_synthetic_run(run, seeds=10, alphas=alphas, soft_alpha_zero=True, lambdas=lambdas,
                                     benefit={"0": 2.0, "1": 0.5, "2": 0.0, "3": -1.0}, iterations=25,
                                     early_stop_fraction=0.0, diverged_fraction=0.02, error_fraction=0.01,
                                     samples="some", files=files, rng_seed=0, sweep="bench")


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None, help="write the run here and keep it")
    parser.add_argument("--files", type=int, default=10000,
                        help="metric files (the sweep's sink writes about one per trial and flush; default 10000)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_analyze_"))
    run = root / "bench"
    if not (run / "trials.parquet").exists():
        truth, gen_s = timed(generate, run, args.files)
        print(f"generated {truth['trials']} trials, {truth['metric_rows']:,} metric rows in {gen_s:.1f} s -> {run}")

    def plain_read() -> int:
        table = ds.dataset(run / "metrics", format="parquet").to_table()
        return table.num_rows + pq.read_table(run / "trials.parquet").num_rows

    plain_read()  # warm the page cache so both sides read from memory
    rows, base_s = timed(plain_read)
    data, load_s = timed(analysis.load_runs, [run], "fid")
    result, stat_s = timed(analysis.analyze, data)
    _, report_s = timed(report.write_report, result, root / "report_inprocess")
    env = dict(os.environ, MPLBACKEND="Agg")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "orchestrator.analyze", str(run), "--out", str(root / "report")],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, env=env)
    e2e_s = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"analyze failed: {proc.stderr.strip()}")
    n_files = sum(1 for p in (run / "metrics").iterdir() if not p.name.startswith((".", "_")))
    print(f"cores available: {len(os.sched_getaffinity(0))}; {len(data.trials)} trials, {rows - len(data.trials):,} "
          f"metric rows in {n_files} files, {len(result.configs)} shared configurations, {len(result.pairs)} pairs")
    print(f"{'part':<34}{'seconds':>9}{'x plain read':>14}")
    for name, secs in (("baseline: plain pyarrow read", base_s), ("load (load_runs)", load_s),
                       ("statistics (analyze)", stat_s), ("report (figures, html, md, csv)", report_s),
                       ("end to end (python -m ..., fresh)", e2e_s)):
        print(f"{name:<34}{secs:>9.2f}{secs / base_s:>14.1f}")
    print("goal: end to end <= 10 s on 2 cores:", "met" if e2e_s <= 10 else "NOT met")


if __name__ == "__main__":
    main()
