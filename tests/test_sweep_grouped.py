"""Sweeps whose Tune trials train groups of arms: the same Parquet as one arm per trial, with
group_id naming the Tune trial (real Ray, Tune, training and Parquet)."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from ray.util.debug import reset_log_once

import orchestrator
from orchestrator.schema import SCHEMA_VERSION
from orchestrator.sweep import main
from orchestrator.testing import read_run

KEYS = ["config_id", "seed"]


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def runs(ray_local, tmp_path_factory):
    storage = tmp_path_factory.mktemp("grouped")
    tensorboard = logging.getLogger("ray.tune.logger.tensorboardx")
    tensorboard.addHandler(warnings := Warnings())
    reset_log_once("invalid_tbx_value")  # Tune warns once per process
    try:
        assert main(["--space", "smoke", "--storage", str(storage), "--name", "grouped", "--arms-per-trial", "3"]) == 0
    finally:
        tensorboard.removeHandler(warnings)
    assert main(["--space", "smoke", "--storage", str(storage), "--name", "single"]) == 0
    return storage / "grouped", storage / "single", warnings.messages


def test_tensorboard_logs_a_grouped_trial_without_warnings(runs):
    # A group's per-arm results once reached Tune's TensorBoard logger as a list of dicts, which it
    # rejected by printing the whole list (~300 KB for 256 arms) in a warning.
    assert runs[2] == []


def test_grouped_sweep_writes_one_row_per_arm_iteration_and_task(runs):
    metrics, trials, record = read_run(runs[0])
    tasks, planned = record["tasks"], record["trials"]
    assert record["spec"]["arms_per_trial"] == 3
    assert len(trials) == len(planned) and trials["trial_id"].is_unique
    assert set(trials["status"]) == {"TERMINATED"}
    assert len(metrics) == len(planned) * record["spec"]["iterations"] * len(tasks)
    assert not metrics.duplicated(["trial_id", "iteration", "task"]).any()
    assert set(metrics["schema_version"]) == set(trials["schema_version"]) == {SCHEMA_VERSION}
    # group_id names the Tune trial: at most 3 arms each, hard arms never with the others
    sizes = trials.groupby("group_id").size()
    assert sizes.max() > 1 and sizes.max() <= 3 and len(sizes) < len(trials)
    assert (trials.groupby("group_id")["seed"].nunique() == 1).all()  # a capped pool is drawn per seed
    assert (trials.groupby("group_id")["mode"].agg(lambda m: ("hard" in set(m)) <= (set(m) == {"hard"}))).all()
    by_arm = metrics.drop_duplicates("trial_id").set_index("trial_id")["group_id"]
    assert by_arm.to_dict() == trials.set_index("trial_id")["group_id"].to_dict()


def test_an_arm_trained_in_a_group_reports_what_it_reports_alone(runs):
    grouped, single = (read_run(run) for run in runs[:2])
    columns = ["iteration", "task", "fid", "kid", "g_loss", "d_loss", "precision", "recall"]
    for (metrics, trials, _), name in ((grouped, "grouped"), (single, "single")):
        assert trials[KEYS].value_counts().max() == 1, name
    merged = [m.merge(t[["trial_id", "seed"]], on="trial_id")[[*KEYS, *columns]]
              .sort_values([*KEYS, "iteration", "task"]).reset_index(drop=True) for m, t, _ in (grouped, single)]
    assert len(merged[0]) == len(merged[1])
    pd.testing.assert_frame_equal(merged[0][[*KEYS, "iteration", "task", "g_loss", "d_loss"]],
                                  merged[1][[*KEYS, "iteration", "task", "g_loss", "d_loss"]])  # same training
    # the metrics of one batched classifier pass equal the per-arm ones up to float rounding
    np.testing.assert_allclose(merged[0][["fid", "kid", "precision", "recall"]].to_numpy(),
                               merged[1][["fid", "kid", "precision", "recall"]].to_numpy(), rtol=1e-4, atol=1e-6)


def test_load_trial_gives_an_arm_of_a_group(runs):
    _, trials, _ = read_run(runs[0])
    row = trials[trials["group_id"].duplicated(keep=False)].iloc[1]
    gan = orchestrator.load_trial(runs[0], row["trial_id"])
    assert gan.config.seed == row["seed"] and gan.config.mode == row["mode"]
    kept = np.load(row["samples_path"])
    np.testing.assert_allclose(gan.sample(kept["images"].shape[1]), kept["images"], atol=1e-5)


def test_arms_per_trial_is_checked_before_anything_runs(tmp_path, capsys):
    for bad, message in ((["--arms-per-trial", "0"], "arms_per_trial must be an integer >= 1"),
                         (["--arms-per-trial", "x"], "--arms-per-trial must be an integer")):
        assert main(["--space", "smoke", "--storage", str(tmp_path), *bad]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not any(tmp_path.iterdir())


def test_auto_groups_arms_on_cpu_only_where_every_cpu_stays_busy():
    """`auto` on CPU: the default sweep's 144 arms on 2 CPUs train in groups of up to 8 (38 Tune
    trials, >= 8 per CPU); a small sweep, a cluster not yet joined, Optuna and PBT keep one arm
    per trial; a GPU share is filled as before."""
    import search_spaces as ss
    from orchestrator.sweep import resolve_arms_per_trial
    from orchestrator.tune_mapping import pack_arms

    default = ss.load_space("default")
    trials = ss.expand_trials(default, 4)
    assert len(trials) == 144
    assert resolve_arms_per_trial(default, 0.0, 144, cpu_slots=2)[0] == 8
    assert resolve_arms_per_trial(default, 0.0, 18, cpu_slots=2)[0] == 1
    assert resolve_arms_per_trial(default, 0.0, 144, cpu_slots=None)[0] == 1
    assert resolve_arms_per_trial(default.with_overrides(search="optuna"), 0.0, 144, cpu_slots=2)[0] == 1
    assert resolve_arms_per_trial(default.with_overrides(scheduler="pbt"), 0.0, 144, cpu_slots=2)[0] == 1
    assert resolve_arms_per_trial(default.with_overrides(arms_per_trial=3), 0.0, 144, cpu_slots=2)[0] == 3
    assert resolve_arms_per_trial(default, 0.25, 144, cpu_slots=2)[0] == 64
    sizes = [len(group) for group in pack_arms(trials, 8)]
    assert len(sizes) == 38 and sizes == sorted(sizes, reverse=True)  # the longest trials start first


def test_the_sweep_header_counts_arms_and_the_tune_trials_they_form():
    from types import SimpleNamespace

    import search_spaces as ss
    from orchestrator.sweep import disk_estimate, planned_trials_line

    default = ss.load_space("default")
    trials = ss.expand_trials(default, 4)
    grouped = SimpleNamespace(spec=default.with_overrides(arms_per_trial=8), trials=trials)
    assert planned_trials_line(grouped) == "144 arms in 38 trials of up to 8 arms"
    grouped.task_names = ["0", "1", "2", "3"]
    assert f"(144 arms x {default.keep_checkpoints} kept x" in disk_estimate(grouped)
    assert planned_trials_line(SimpleNamespace(spec=default.with_overrides(arms_per_trial=1), trials=trials)) \
        == "144 trials"
    optuna = SimpleNamespace(spec=default.with_overrides(search="optuna", arms_per_trial=4), trials=[])
    assert planned_trials_line(optuna) == "optuna arms in groups of up to 4"
