"""The sweep's progress display: labels a person can read, outcomes, work counted for the ETA."""
from __future__ import annotations

import pytest

from orchestrator.progress import arm_label, duration, eta_seconds, outcome, work


def test_arm_labels_name_what_varies_in_each_mode():
    assert arm_label({"trial": {"mode": "soft", "alpha": 0.012345, "lambdas": [0.61, 1.39], "seed": 1}}) == \
        "soft alpha=0.01235 lambda=(0.61,1.39) seed=1"
    assert arm_label({"mode": "hard", "alpha": 0.0, "lambdas": [1.0, 1.0], "seed": 0}) == "hard lambda=(1,1) seed=0"
    assert arm_label({"mode": "independent", "alpha": 0.0, "lambdas": [1.0, 1.0], "seed": 2}) == "independent seed=2"
    assert arm_label({"mode": "independent", "seed": 2, "replicate": 1, "samples_per_task": 10}) == \
        "independent seed=2 replicate=1 images=10"
    assert arm_label({"mode": "independent", "seed": 2, "replicate": 0, "samples_per_task": None}) == \
        "independent seed=2 images=all"
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


class _Trial:
    """What Progress reads from a Tune trial."""

    def __init__(self, trial_id: str, status: str = "PENDING", iteration: int = 0) -> None:
        self.trial_id, self.status = trial_id, status
        self.config = {"trial": {"mode": "soft", "alpha": 0.5, "lambdas": [1.0, 1.0], "seed": 0, "iterations": 4}}
        self.last_result = {"iteration": iteration} if iteration else {}


def test_progress_counts_follow_tunes_events_across_a_resume(capsys):
    from orchestrator.progress import Progress

    progress = Progress(total=5, iterations=4, every_seconds=1e9)
    # A resumed sweep: one trial ended under the driver before, one was restored mid-way.
    trials = [_Trial("a", "TERMINATED", 4), _Trial("b", "PENDING", 2)]
    progress.on_step_begin(0, trials)
    assert "1/5 done, 0 running, 4 pending  ETA -" in progress.status_line(trials)
    trials += [_Trial("c"), _Trial("d")]  # the searcher adds trials as it goes
    for trial in trials[1:3]:
        trial.status = "RUNNING"
        progress.on_trial_start(0, trials, trial)
    trials[1].last_result = {"iteration": 3, "fid_mean": 2.0}
    progress.on_trial_result(0, trials, trials[1], trials[1].last_result)
    assert "1/5 done, 2 running, 2 pending  ETA ~" in progress.status_line(trials)  # work done here: an ETA
    trials[1].last_result = {"iteration": 4, "fid_mean": 2.0}
    trials[1].status = "TERMINATED"
    progress.on_trial_complete(0, trials, trials[1])
    trials[2].status = "ERROR"
    progress.on_trial_error(0, trials, trials[2])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[2/5]") and lines[0].endswith("done  (trial b)")
    assert lines[1].startswith("[3/5]") and "FAILED: error" in lines[1]
    assert "3/5 done, 0 running, 2 pending" in progress.status_line(trials)
    trials[2].status = "RUNNING"  # restarted after its error
    progress.on_trial_start(0, trials, trials[2])
    assert "2/5 done, 1 running, 2 pending" in progress.status_line(trials)


def test_an_estimated_total_says_so_and_never_goes_negative(capsys):
    """Grouped Optuna decides its groups as it goes: the total is an estimate, shown as ~N."""
    from orchestrator.progress import Progress

    progress = Progress(total=2, iterations=4, every_seconds=1e9, estimated=True)
    trials = [_Trial(name, "RUNNING") for name in "abc"]  # one group more than estimated
    for trial in trials:
        progress.on_trial_start(0, trials, trial)
    assert "0/~2 done, 3 running, ~0 pending" in progress.status_line(trials)
    trials[0].status, trials[0].last_result = "TERMINATED", {"iteration": 4, "fid_mean": 2.0}
    progress.on_trial_complete(0, trials, trials[0])
    assert capsys.readouterr().out.startswith("[ 1/~2]")


def test_the_eta_weighs_a_group_by_its_arms():
    """A group of 3 arms is 3 arms' work: with it done and a lone arm left, the lone arm is 1/4 of the work."""
    from orchestrator.progress import Progress

    progress = Progress(total=2, iterations=4, every_seconds=1e9)
    group, single = _Trial("g", "RUNNING"), _Trial("s")
    group.config = {"trial": {"arms": [{"mode": "soft"}] * 3, "iterations": 4}}
    trials = [group, single]
    progress.on_step_begin(0, trials)
    progress._work_at_start, progress._start = 0.0, progress._start - 30.0  # 30 s in
    group.status, group.last_result = "TERMINATED", {"iteration": 4, "fid_mean": 2.0}
    progress.on_trial_complete(0, trials, group)
    assert progress._work == 12 and progress._planned_sum == 16
    assert "ETA ~10s" in progress.status_line(trials)  # 4 arm-iterations left at 12 per 30 s
