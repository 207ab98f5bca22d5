"""Schema version 2 for SQL users, and version 1 runs still read the same."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from orchestrator import analysis, testing
from orchestrator.schema import DIVERGED, HARD, METRICS_DIR, METRICS_SCHEMA, TRIALS_FILE, metrics_as_current


def _as_version_1(run: Path) -> None:
    """Rewrite a run as schema version 1 wrote it: float unix-seconds timestamps, no final flag,
    "diverged" in lower case, hard sharing's α = 0."""
    for path in (run / METRICS_DIR).glob("[!._]*.parquet"):  # not the planted half-written file
        table = pq.read_table(path)
        seconds = pc.divide(pc.cast(pc.cast(table["timestamp"], pa.int64()), pa.float64()), 1e6)
        table = table.set_column(table.schema.get_field_index("timestamp"), "timestamp", seconds)
        table = table.drop_columns(["final"])
        table = table.set_column(0, "schema_version", pa.array([1] * table.num_rows, pa.int32()))
        pq.write_table(table, path)
    trials = pq.read_table(run / TRIALS_FILE).to_pandas()
    trials["schema_version"] = np.int32(1)
    trials.loc[trials["status"] == DIVERGED, "status"] = "diverged"
    trials.loc[trials["mode"] == HARD, "alpha"] = 0.0
    pq.write_table(pa.Table.from_pandas(trials, preserve_index=False), run / TRIALS_FILE)


def test_version_1_metrics_convert_to_the_current_types():
    v1 = pa.table({**{f.name: pa.nulls(1, f.type) for f in METRICS_SCHEMA if f.name not in ("timestamp", "final")},
                   "timestamp": pa.array([1.7e9 + 0.25])})
    current = metrics_as_current(v1)
    assert current.schema == METRICS_SCHEMA
    assert current["timestamp"][0].as_py().timestamp() == 1.7e9 + 0.25 and current["final"][0].as_py() is False


def test_a_version_1_run_is_analysed_as_its_version_2_twin(tmp_path: Path):
    v2, v1 = tmp_path / "v2", tmp_path / "v1"
    testing.write_synthetic_run(v2, seeds=4, alphas=(0.1, 1.0), iterations=3)
    trials = pq.read_table(v2 / TRIALS_FILE).to_pandas()
    trials.loc[trials.index[trials["mode"] != "independent"][:2], "status"] = DIVERGED
    pq.write_table(pa.Table.from_pandas(trials, preserve_index=False), v2 / TRIALS_FILE)
    shutil.copytree(v2, v1)
    _as_version_1(v1)
    assert set(pq.read_table(v1 / TRIALS_FILE)["status"].to_pylist()) >= {"diverged"}
    results = [analysis.analyze(analysis.load_runs([run], "fid"), resamples=2000) for run in (v2, v1)]
    assert results[0].benefit_table.equals(results[1].benefit_table)
    assert (results[0].status_counts.to_numpy() == results[1].status_counts.to_numpy()).all()
    assert np.allclose(results[0].benefit, results[1].benefit, equal_nan=True)
