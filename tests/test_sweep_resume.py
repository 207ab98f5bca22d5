"""--resume after the driver is SIGKILLed mid-sweep: no trial lost, no row doubled or lost.

The kill is placed where a row-buffering sink loses data: as soon as Tune has persisted an
experiment state that names a trial checkpoint. A resumed trial restarts from that checkpoint
and never reports its iteration again, so that iteration's rows must already be on disk.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
from ray.tune.trainable.metadata import _TrainingRunMetadata

from orchestrator.testing import kill_group, read_metrics, start_driver, write_space

REPO = Path(__file__).resolve().parents[1]
ITERATIONS = 4  # > CheckpointConfig.num_to_keep (3): Tune then saves its state mid-trial


def checkpointed_iterations(run_dir: Path) -> set[tuple[str, int]]:
    """(trial_id, iteration) of each trial's latest checkpoint named by Tune's newest saved
    experiment state -- where a resume restarts that trial from."""
    states = sorted(run_dir.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    if not states:
        return set()
    try:
        state = json.loads(states[-1].read_text())
    except (json.JSONDecodeError, FileNotFoundError):
        return set()  # caught mid-write: look again at the next poll
    named = set()
    for _, run_metadata in state["trial_data"]:
        latest = _TrainingRunMetadata.from_json_state(run_metadata).checkpoint_manager.latest_checkpoint_result
        if latest is not None:  # the trial directory is named by its trial_id (sweep.trial_dirname)
            named.add((Path(latest.checkpoint.path).parent.name, int(latest.metrics["iteration"])))
    return named


@pytest.mark.parametrize("arms_per_trial", [1, 3], ids=["one-arm", "grouped"])
def test_resume_after_sigkill(tmp_path, arms_per_trial):
    space = write_space(tmp_path, "resume", seeds=[0, 1, 2], num_samples=2, iterations=ITERATIONS,
                        steps_per_iteration=100, arms_per_trial=arms_per_trial)
    storage, name = tmp_path / "results", "killed"
    run_dir = storage / name
    args = ["--space", space, "--storage", str(storage), "--name", name]

    first = start_driver(args, tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 240
        while True:
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "Tune saved no experiment state naming a checkpoint"
            named = checkpointed_iterations(run_dir)
            if any(iteration < ITERATIONS for _, iteration in named):  # a trial a resume restarts mid-way
                # read after the state: whatever the state names must already be on disk (a
                # grouped trial's checkpoint stands for the rows of each of its arms)
                rows = read_metrics(run_dir)
                on_disk = set(zip(rows["group_id"].fillna(rows["trial_id"]), rows["iteration"]))
                break
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)  # the driver only, as a crash would
        first.wait(timeout=30)
    finally:
        time.sleep(1)
        kill_group(first)  # whatever the dead driver left behind
    before_kill = read_metrics(run_dir).drop_duplicates()  # (a compaction cut short may leave a part beside its merge)
    planned = json.loads((run_dir / "sweep.json").read_text())["trials"]
    statuses = pd.read_parquet(run_dir / "trials.parquet")["status"]
    assert (statuses == "TERMINATED").sum() < len(planned), "the sweep finished before it was killed"

    second = start_driver(["--resume", "--name", name, "--storage", str(storage)], tmp_path / "second.log")
    try:
        assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    finally:
        kill_group(second)
    trials = pd.read_parquet(run_dir / "trials.parquet")
    metrics = read_metrics(run_dir)
    tasks = sorted(set(metrics["task"]))
    assert len(trials) == len(planned)  # no trial lost, none added
    assert set(trials["status"]) == {"TERMINATED"}
    assert sorted(zip(trials["config_id"], trials["seed"])) == sorted((t["config_id"], t["seed"]) for t in planned)
    # every trial has iterations 1..K for every task exactly once (none lost, none doubled)
    for trial_id in trials["trial_id"]:
        rows = metrics[metrics.trial_id == trial_id]
        assert sorted(zip(rows["iteration"], rows["task"])) == [(i, t) for i in range(1, ITERATIONS + 1)
                                                                for t in tasks], trial_id
    assert named <= on_disk, f"experiment state named checkpoints whose rows were not on disk: {named - on_disk}"
    # rows written before the kill are kept as written, not rewritten by the resumed run
    kept = before_kill.merge(metrics, on=["trial_id", "iteration", "task"], suffixes=("_before", "_after"))
    assert len(kept) == len(before_kill) > 0
    assert (kept["timestamp_before"] == kept["timestamp_after"]).all()
    # compacted: one file per trial once the sweep is done
    assert len([p for p in (run_dir / "metrics").iterdir() if not p.name.startswith(".")]) == len(planned)
    if arms_per_trial > 1:
        assert trials.groupby("group_id").size().max() > 1  # arms were trained (and resumed) in groups
    assert " -m orchestrator.analyze" in (tmp_path / "second.log").read_text()
