"""Reading a run while its trials run, the way users do: DuckDB's and Polars' ``*.parquet`` glob
readers in a loop against a real sweep. Every read must succeed and see each row at most once;
no file a glob matches may be a temporary one; trials.parquet is there as soon as sweep.json is.
The polls go on through the compaction when the sweep ends: a read may fail then (a file listed
just before the swap; documented), but none may see a row twice."""
from __future__ import annotations

import threading
import time
from collections import Counter

import duckdb
import polars as pl
import pyarrow.parquet as pq

import search_spaces as ss
from orchestrator.sweep import main as sweep_main

KEY = ("trial_id", "iteration", "task")
ITERATIONS = 4


class Poller(threading.Thread):
    """Reads the run in a loop with ``reader`` ("duckdb", "polars" or "listing": DuckDB's glob()
    alone, cheap, so it polls often enough to catch a file that is visible for milliseconds)."""

    def __init__(self, run_dir, reader: str, n_trials: int) -> None:
        super().__init__(daemon=True)
        self.run_dir, self.reader, self.n_trials = run_dir, reader, n_trials
        self.stop = threading.Event()
        self.polls = 0
        self.problems: list[str] = []
        self.trials_missing = 0
        self.last_rows: list[tuple] = []

    def read(self) -> list[tuple]:
        glob = f"{self.run_dir}/metrics/*.parquet"
        if self.reader == "listing":
            with duckdb.connect() as con:
                names = [r[0].rsplit("/", 1)[-1] for r in con.sql(f"SELECT file FROM glob('{glob}')").fetchall()]
                names += [r[0].rsplit("/", 1)[-1] for r in
                          con.sql(f"SELECT file FROM glob('{self.run_dir}/*.parquet')").fetchall()]
            hidden = [n for n in names if n.startswith((".", "_"))]
            if hidden:
                self.problems.append(f"glob matched temporary file(s) {hidden}")
            return []
        if self.reader == "duckdb":
            with duckdb.connect() as con:
                con.sql(f"SELECT count(*) FROM read_parquet('{self.run_dir}/trials.parquet')").fetchall()
                return con.sql(f"SELECT trial_id, iteration, task FROM read_parquet('{glob}')").fetchall()
        return pl.scan_parquet(glob).select(list(KEY)).collect().rows()

    def has_metrics(self) -> bool:
        metrics = self.run_dir / "metrics"
        return metrics.is_dir() and any(not p.name.startswith(".") for p in metrics.glob("*.parquet"))

    def trials_finished(self, n_trials: int) -> bool:
        try:
            statuses = pq.read_table(self.run_dir / "trials.parquet", columns=["status"]).column("status").to_pylist()
        except OSError:
            return False
        return len(statuses) == n_trials and all(s in ("TERMINATED", "ERROR", "DIVERGED") for s in statuses)

    def run(self) -> None:
        while not self.stop.is_set():
            if not (self.run_dir / "sweep.json").exists():
                time.sleep(0.005)
                continue
            if not (self.run_dir / "trials.parquet").exists():
                self.trials_missing += 1
            if not self.has_metrics():  # a glob over nothing fails whatever the writer does
                time.sleep(0.005)
                continue
            self.polls += 1
            try:
                rows = self.read()
            except Exception as e:  # noqa: BLE001 -- any failure of the reader counts...
                if not self.trials_finished(self.n_trials):  # ...unless it overlapped the final merge
                    self.problems.append(f"{type(e).__name__}: {str(e).splitlines()[0]}")
                continue
            doubled = [k for k, n in Counter(rows).items() if n > 1]
            if doubled:  # not even while the sweep's end compacts the files
                self.problems.append(f"{len(doubled)} rows read twice, e.g. {doubled[0]}")
            self.last_rows = rows
            if self.reader == "listing":
                time.sleep(0.002)


def test_duckdb_and_polars_globs_read_a_running_sweep_without_errors(ray_local, tmp_path):
    storage = tmp_path / "results"
    spec = ss.load_space("smoke")
    n_trials = len(spec.seeds) * (spec.num_samples + 1)
    pollers = [Poller(storage / "live", reader, n_trials) for reader in ("duckdb", "polars", "listing")]
    for poller in pollers:
        poller.start()
    try:
        assert sweep_main(["--space", "smoke", "--iterations", str(ITERATIONS), "--storage", str(storage),
                           "--name", "live"]) == 0
    finally:
        for poller in pollers:
            poller.stop.set()
            poller.join(timeout=60)
    for poller in pollers:
        assert poller.polls >= 10, f"{poller.reader}: only {poller.polls} polls, the test did not watch the sweep"
        assert poller.problems == [], (f"{poller.reader}: {len(poller.problems)} of {poller.polls} polls went "
                                       f"wrong: {poller.problems[:5]}")
        assert poller.trials_missing == 0, f"{poller.reader}: trials.parquet missing after sweep.json appeared"
    everything = n_trials * ITERATIONS * 2  # trials x iterations x tasks
    final = duckdb.sql(f"SELECT trial_id, iteration, task FROM read_parquet('{storage}/live/metrics/*.parquet')")
    assert len(final.fetchall()) == everything
    assert pl.scan_parquet(f"{storage}/live/metrics/*.parquet").select(list(KEY)).collect().height == everything
