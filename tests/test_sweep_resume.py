"""--resume after the driver is SIGKILLed mid-sweep: no trial lost, no row doubled."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.dataset as pads

from tests.test_spaces import write_space

REPO = Path(__file__).resolve().parents[1]


def sweep_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.sweep", *args]


def start_driver(args: list[str], log: Path) -> subprocess.Popen:
    # own session: the test can clean up the driver's whole process group afterwards
    env = {**os.environ, "RAY_ADDRESS": ""}
    return subprocess.Popen(sweep_command(*args), cwd=REPO, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def metric_files(run_dir: Path) -> list[Path]:
    metrics = run_dir / "metrics"
    return [p for p in metrics.glob("*.parquet") if not p.name.startswith(".")] if metrics.exists() else []


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_resume_after_sigkill(tmp_path):
    space = write_space(tmp_path, "resume", seeds=[0, 1, 2], num_samples=2, iterations=3, steps_per_iteration=300)
    storage, name = tmp_path / "results", "killed"
    run_dir = storage / name
    args = ["--space", space, "--storage", str(storage), "--name", name]

    first = start_driver(args, tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 240
        while len(metric_files(run_dir)) < 2:
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no results appeared"
            time.sleep(0.2)
        os.kill(first.pid, signal.SIGKILL)  # the driver only, as a crash would
        first.wait(timeout=30)
    finally:
        time.sleep(2)
        kill_group(first)  # whatever the dead driver left behind
    statuses = pd.read_parquet(run_dir / "trials.parquet")["status"]
    planned = json.loads((run_dir / "sweep.json").read_text())["trials"]
    assert (statuses == "TERMINATED").sum() < len(planned), "the sweep finished before it was killed"

    second = start_driver(["--resume", "--name", name, "--storage", str(storage)], tmp_path / "second.log")
    try:
        assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    finally:
        kill_group(second)
    trials = pd.read_parquet(run_dir / "trials.parquet")
    metrics = pads.dataset(run_dir / "metrics", format="parquet").to_table().to_pandas()
    assert len(trials) == len(planned)  # no trial lost, none added
    assert set(trials["status"]) == {"TERMINATED"}
    assert sorted(zip(trials["config_id"], trials["seed"])) == sorted((t["config_id"], t["seed"]) for t in planned)
    assert not metrics.duplicated(["trial_id", "iteration", "task"]).any()
    assert len(metrics) == len(planned) * 3 * 2
    assert "python -m orchestrator.analyze" in (tmp_path / "second.log").read_text()
