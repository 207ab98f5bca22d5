"""The sweep's progress display: labels a person can read, outcomes, work counted for the ETA."""
from __future__ import annotations

import pytest

from orchestrator.progress import arm_label, duration, eta_seconds, outcome, work


def test_arm_labels_name_what_varies_in_each_mode():
    assert arm_label({"trial": {"mode": "soft", "alpha": 0.012345, "lambdas": [0.61, 1.39], "seed": 1}}) == \
        "soft alpha=0.01235 lambda=(0.61,1.39) seed=1"
    assert arm_label({"mode": "hard", "alpha": 0.0, "lambdas": [1.0, 1.0], "seed": 0}) == "hard lambda=(1,1) seed=0"
    assert arm_label({"mode": "independent", "alpha": 0.0, "lambdas": [1.0, 1.0], "seed": 2}) == "independent seed=2"
    # Optuna's raw weights are shown scaled to sum to n, as the trainable runs them
    assert arm_label({"mode": "soft", "alpha": 1.0, "lambda_0": 1.0, "lambda_1": 3.0, "seed": 0}) == \
        "soft alpha=1 lambda=(0.5,1.5) seed=0"


@pytest.mark.parametrize("status, result, planned, expected", [
    ("TERMINATED", {"iteration": 4}, 4, "done"),
    ("TERMINATED", {"iteration": 1}, 4, "stopped early at iteration 1/4"),
    ("TERMINATED", {"iteration": 2, "diverged": True, "error": "diverged at step 12"}, 4,
     "diverged: diverged at step 12"),
    ("ERROR", {"iteration": 2}, 4, "FAILED: boom"),
])
def test_outcomes(status, result, planned, expected):
    assert outcome(status, result, planned, error="boom") == expected


def test_work_counts_finished_arms_whole_and_running_ones_by_iteration():
    states = [("TERMINATED", {"iteration": 1}, 4),  # stopped early: nothing left to do
              ("RUNNING", {"iteration": 2}, 4), ("PENDING", {}, 4), ("ERROR", {"iteration": 1}, 4)]
    assert work(states) == 4 + 2 + 0 + 4
    assert eta_seconds(done_now=10, done_at_start=0, elapsed=20, remaining=6) == pytest.approx(12)
    assert eta_seconds(done_now=5, done_at_start=5, elapsed=20, remaining=6) is None  # nothing done yet here


def test_durations():
    assert [duration(s) for s in (0, 42.4, 187, 7500)] == ["0s", "42s", "3m07s", "2h05m"]
