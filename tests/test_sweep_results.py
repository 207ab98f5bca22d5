"""The Parquet sink's metrics files on a real directory: a compaction cut short by a dead driver
is repaired at setup (never a row counted twice, never a row dropped), and compaction merges a
trial's files into one, rows unchanged."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads

from orchestrator.results import ParquetResults
from orchestrator.schema import METRICS_DIR, METRICS_SCHEMA, RunLocation

TASKS = ["0", "1"]


def rows(trial_id: str, iterations: list[int]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"schema_version": 1, "sweep": "s", "trial_id": trial_id, "config_id": "c", "iteration": i,
          "step": 10 * i, "task": t, "task_index": k, "fid": float(i), "kid": 0.0, "precision": 0.0,
          "recall": 0.0, "accuracy": 0.0, "g_loss": 0.0, "d_loss": 0.0, "time_s": float(i),
          "timestamp": datetime.fromtimestamp(1000.0 + i + k / 10, timezone.utc), "final": False}
         for i in iterations for k, t in enumerate(TASKS)], schema=METRICS_SCHEMA)


def metrics_dir_names(run_dir: Path) -> set[str]:
    return {p.name for p in (run_dir / METRICS_DIR).iterdir()}


def read_all(run_dir: Path) -> list[dict]:
    table = pads.dataset(run_dir / METRICS_DIR, format="parquet").to_table()
    return sorted(table.to_pylist(), key=lambda r: (r["trial_id"], r["iteration"], r["task_index"]))


def test_setup_repairs_a_compaction_cut_short_and_compact_merges(tmp_path):
    run_dir = tmp_path / "run"
    run = RunLocation(str(run_dir))
    run.makedirs(METRICS_DIR)
    # trial a: the driver died after writing the merged 1..3 file, before deleting part 2
    run.write_table(rows("a_00000", [1, 2, 3]), METRICS_DIR, "a_00000-1-3.parquet")
    run.write_table(rows("a_00000", [2]), METRICS_DIR, "a_00000-2-2.parquet")
    run.write_table(rows("a_00000", [4]), METRICS_DIR, "a_00000-4-4.parquet")  # after it: not covered
    # trial b (PBT: its iterations jumped 2 -> 5): part 3 lies in the range 1..5, but its rows do not
    run.write_table(rows("b_00001", [1, 2, 5]), METRICS_DIR, "b_00001-1-5.parquet")
    run.write_table(rows("b_00001", [3]), METRICS_DIR, "b_00001-3-3.parquet")
    (run_dir / METRICS_DIR / ".tmp-0123-a_00000-5-5.parquet").write_bytes(b"half a file")
    expected = sorted(rows("a_00000", [1, 2, 3, 4]).to_pylist() + rows("b_00001", [1, 2, 3, 5]).to_pylist(),
                      key=lambda r: (r["trial_id"], r["iteration"], r["task_index"]))

    sink = ParquetResults(str(run_dir), "s", TASKS, 1.0, 0.0)
    sink.setup()
    assert metrics_dir_names(run_dir) == {"a_00000-1-3.parquet", "a_00000-4-4.parquet",
                                          "b_00001-1-5.parquet", "b_00001-3-3.parquet"}
    assert read_all(run_dir) == expected  # each row once, none lost
    assert ("a_00000", 4) in sink._written and ("b_00001", 3) in sink._written

    sink.compact("a_00000")
    sink.compact("b_00001")
    assert metrics_dir_names(run_dir) == {"a_00000-1-4.parquet", "b_00001-1-5.parquet"}
    assert read_all(run_dir) == expected  # same rows, timestamps included

    sink.compact("a_00000")  # one file already: nothing to do
    assert metrics_dir_names(run_dir) == {"a_00000-1-4.parquet", "b_00001-1-5.parquet"}


def test_compact_all_swaps_the_merged_files_in_at_once(tmp_path):
    run_dir = tmp_path / "run"
    run = RunLocation(str(run_dir))
    run.makedirs(METRICS_DIR)
    run.write_table(rows("a_00000", [1, 2]), METRICS_DIR, "a_00000-1-2.parquet")
    run.write_table(rows("a_00000", [3]), METRICS_DIR, "a_00000-3-3.parquet")
    run.write_table(rows("b_00001", [1]), METRICS_DIR, "b_00001-1-1.parquet")  # one file: left as it is
    (run_dir / METRICS_DIR / "_notes.txt").write_text("a user's file")
    (run_dir / ".metrics-compacting").mkdir()  # left by a driver that died while compacting
    (run_dir / ".metrics-compacting" / "a_00000-1-3.parquet").write_bytes(b"stale")
    expected = read_all(run_dir)
    b_inode = (run_dir / METRICS_DIR / "b_00001-1-1.parquet").stat().st_ino

    sink = ParquetResults(str(run_dir), "s", TASKS, 1.0, 0.0)
    sink.setup()
    assert not (run_dir / ".metrics-compacting").exists()
    before = (run_dir / METRICS_DIR).stat().st_ino
    sink.compact_all()
    assert (run_dir / METRICS_DIR).stat().st_ino != before  # a new directory swapped in, not edited in place
    assert metrics_dir_names(run_dir) == {"a_00000-1-3.parquet", "b_00001-1-1.parquet", "_notes.txt"}
    assert (run_dir / METRICS_DIR / "b_00001-1-1.parquet").stat().st_ino == b_inode  # linked, not rewritten
    assert (run_dir / METRICS_DIR / "_notes.txt").read_text() == "a user's file"
    assert read_all(run_dir) == expected
    assert not (run_dir / ".metrics-compacting").exists()


class _Trial:
    """What the sink reads from a Tune trial."""

    def __init__(self, trial_id: str, config: dict) -> None:
        self.trial_id, self.config, self.status, self.last_result = trial_id, config, "PENDING", {}


def test_trials_parquet_written_from_changed_rows_equals_a_full_rewrite(tmp_path):
    import pyarrow.parquet as pq

    import search_spaces as ss
    from orchestrator.schema import TRIALS_FILE

    configs = ss.expand_trials(ss.load_space("smoke"), len(TASKS))
    trials = [_Trial(f"t_{i:05d}", {"trial": c}) for i, c in enumerate(configs * 3)]
    sink = ParquetResults(str(tmp_path / "run"), "s", TASKS, 1.0, 0.0)
    sink.setup()
    sink.on_step_end(0, trials[:5])
    sink._write_trials()
    sink.on_step_end(0, trials)  # new trials appear
    for trial in trials[3:7]:
        sink.on_trial_start(0, trials, trial)
    sink.on_trial_error(0, trials, trials[4])
    sink._write_trials()
    on_disk = pq.read_table(tmp_path / "run" / TRIALS_FILE)
    assert on_disk.column("trial_id").to_pylist() == sorted(t.trial_id for t in trials)
    assert on_disk.to_pylist() == sorted(sink._trials.values(), key=lambda r: r["trial_id"])
    assert [r["status"] for r in on_disk.to_pylist()[2:8]] == ["PENDING", "RUNNING", "ERROR", "RUNNING", "RUNNING",
                                                               "PENDING"]


def test_a_group_that_fails_leaves_its_diverged_and_stopped_arms_as_they_ended(tmp_path):
    import search_spaces as ss
    from orchestrator.results import arms_of
    from trainables.keys import LOSS_NAMES, METRIC_NAMES

    group = _Trial("g_00000", {"arms": ss.expand_trials(ss.load_space("smoke"), len(TASKS))[:3]})
    group.error_msg = "Traceback ...\nCUDA out of memory"
    sink = ParquetResults(str(tmp_path / "run"), "s", TASKS, 1.0, 0.0)
    sink.setup()
    sink.on_step_end(0, [group])
    sink.on_trial_start(0, [group], group)
    metrics = {f"{m}/{t}": 0.5 for t in TASKS for m in (*METRIC_NAMES, *LOSS_NAMES)}
    sink.on_trial_result(0, [group], group, {"iteration": 1, "step": 10, "time_s": 1.0, "arms": (
        {"arm": 0, "diverged": True, "error": "NaN in task 1 at step 7"},
        {"arm": 1, "diverged": False, "stopped": True, **metrics},  # ASHA stopped it at rung 1
        {"arm": 2, "diverged": False, **metrics})})

    def statuses():
        return [sink._trials[arm.trial_id]["status"] for arm in arms_of(group)]

    sink.on_trial_error(0, [group], group)
    assert statuses() == ["DIVERGED", "TERMINATED", "ERROR"]
    assert sink._trials[arms_of(group)[2].trial_id]["error"] == "CUDA out of memory"
    sink.on_trial_start(0, [group], group)  # --resume: the group runs again and ends
    sink.on_trial_complete(0, [group], group)
    assert statuses() == ["DIVERGED", "TERMINATED", "TERMINATED"]
