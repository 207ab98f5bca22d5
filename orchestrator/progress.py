"""What a running sweep prints: a readable line per finished trial (an arm, or a group of
arms) and a status line with elapsed time, done/running/pending counts and an ETA.

    [ 3/56]  2m05s  soft alpha=0.0123 lambda=(0.61,1.39) seed=1  fid_mean=3.21  done  (trial 9155c_00012)
    [ 4/56]  2m09s  hard lambda=(1,1) seed=0  fid_mean=4.02  stopped early at iteration 1/4  (trial ...)
      2m30s  4/56 done, 2 running, 50 pending  ETA ~31m

The ETA counts work in arm-iterations (a trial training a group of 8 arms weighs 8): a
finished trial (early-stopped ones included) has done all it will do, a running one its
reported iterations; the rate is what this driver has done since it started, so a resumed
sweep does not count the work of the driver before. Early stopping (ASHA) makes the ETA an
upper bound.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable

from ray.tune import Callback

from trainables.tune_trainable import trial_of

FINISHED_STATUSES = ("TERMINATED", "ERROR")


def duration(seconds: float) -> str:
    """2h05m, 3m07s, 42s."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def arm_label(config: dict[str, Any]) -> str:
    """The arm as a person names it: mode, alpha (soft only: it does nothing in the other modes),
    lambda (shared modes), seed, the baseline's replicate (if not the first), and the training
    images per task (where the trial config names them)."""
    trial = trial_of(config)
    if "arms" in trial:  # a Tune trial training a group of arms (each has its own row in trials.parquet)
        n = len(trial["arms"])
        return f"group of {n} arms" if n != 1 else "group of 1 arm"
    mode = trial.get("mode", "?")
    parts = [mode]
    if mode == "soft":
        parts.append(f"alpha={trial.get('alpha', 0):.4g}")
    if mode != "independent":
        raw = trial.get("lambdas")
        if raw is None:  # Optuna's raw per-task weights: shown as the trainable scales them
            weights = [float(v) for k, v in sorted(trial.items()) if k.startswith("lambda_")]
            raw = [w / sum(weights) * len(weights) for w in weights] if weights and sum(weights) > 0 else None
        if raw is not None:
            parts.append("lambda=(" + ",".join(f"{x:.3g}" for x in raw) + ")")
    parts.append(f"seed={trial.get('seed', '?')}")
    if trial.get("replicate"):  # a seed's 2nd/3rd independent baseline (Dunnett allocation)
        parts.append(f"replicate={trial['replicate']}")
    if "samples_per_task" in trial:  # the data regime: several in one sweep are told apart
        n = trial["samples_per_task"]
        parts.append(f"images={'all' if n is None else n}")
    return " ".join(parts)


def outcome(status: str, result: dict[str, Any], planned: int, error: str = "") -> str:
    """How an arm ended: done, stopped early (a scheduler ended it), diverged or failed."""
    if result.get("diverged"):
        return "diverged: " + str(result.get("error", "")).strip()
    if status == "ERROR":
        return "FAILED: " + (error or "error")
    done = int(result.get("iteration", 0) or 0)
    if done < planned:
        return f"stopped early at iteration {done}/{planned}"
    return "done"


def work(trial_states: list[tuple[str, dict[str, Any], int]]) -> float:
    """Iterations done, counting a finished arm as complete: [(status, last_result, planned)]."""
    total = 0.0
    for status, result, planned in trial_states:
        if status in FINISHED_STATUSES:
            total += planned
        else:
            total += min(planned, int((result or {}).get("iteration", 0) or 0))
    return total


def eta_seconds(done_now: float, done_at_start: float, elapsed: float, remaining: float) -> float | None:
    """Seconds left at this driver's rate so far; None before it has done any work."""
    rate = (done_now - done_at_start) / elapsed if elapsed > 0 else 0.0
    if rate <= 0:
        return None
    return remaining / rate


class Progress(Callback):
    """The display above, as a Tune callback on the driver. ``total``: trials the sweep will
    run (``estimated``: about that many, when a searcher decides the grouping as it goes);
    ``iterations``: planned iterations per trial (trials' own ``iterations`` win).

    Its counts are kept up to date from Tune's events, so a finished arm's line and the status
    line cost the same at 20,000 trials as at 20 (Tune's trial list only grows: each trial is
    looked at once when it appears)."""

    def __init__(self, total: int, iterations: int, every_seconds: float = 30.0,
                 error_line: Callable[[Any], str] | None = None, estimated: bool = False) -> None:
        self.total, self.iterations, self.every_seconds = total, iterations, every_seconds
        self.error_line, self.estimated = error_line, estimated
        self._start = time.monotonic()
        self._last_status = self._start
        self._work_at_start: float | None = None
        self._seen = 0                         # trials[:_seen] are counted below
        self._planned_sum = 0                  # planned arm-iterations of the trials seen
        self._work = 0.0                       # work() of the trials seen, kept up to date
        self._counted: dict[str, float] = {}   # each trial's share of _work
        self._finished: set[str] = set()
        self._running: set[str] = set()

    def __reduce__(self):  # stored with the RunConfig in tuner.pkl: constructor arguments only
        return (type(self), (self.total, self.iterations, self.every_seconds, self.error_line, self.estimated))

    @property
    def _total_text(self) -> str:
        return f"~{self.total}" if self.estimated else str(self.total)

    def _planned(self, trial) -> int:
        return int(trial_of(trial.config).get("iterations", self.iterations))

    @staticmethod
    def _arms(trial) -> int:
        """Arms the trial trains: a group of 8 is about 8 arms' work, so the ETA weighs it so."""
        return len(trial_of(trial.config).get("arms", ())) or 1

    def _count(self, trial, status: str, result: dict[str, Any]) -> None:
        """Set the trial's share of the work done to what work() counts for it, per arm."""
        share = work([(status, result, self._planned(trial))]) * self._arms(trial)
        self._work += share - self._counted.get(trial.trial_id, 0.0)
        self._counted[trial.trial_id] = share

    def _catch_up(self, trials: list) -> None:
        """Count the trials Tune added since the last call (on a resume: the ones it restored)."""
        for trial in trials[self._seen:]:
            self._planned_sum += self._planned(trial) * self._arms(trial)
            self._count(trial, trial.status, trial.last_result or {})
            if trial.status in FINISHED_STATUSES:
                self._finished.add(trial.trial_id)
            elif trial.status in ("RUNNING", "PAUSED"):
                self._running.add(trial.trial_id)
        self._seen = len(trials)
        if self._work_at_start is None:  # the work a resumed sweep found done is not this driver's
            self._work_at_start = self._work

    def status_line(self, trials: list) -> str:
        self._catch_up(trials)
        elapsed = time.monotonic() - self._start
        finished, running = len(self._finished), len(self._running)
        pending = max(0, self.total - finished - running)
        planned = (self._planned_sum if len(trials) >= self.total else  # trials not created yet: as those seen
                   self._planned_sum / self._seen * self.total if self._seen else self.total * self.iterations)
        remaining = max(0.0, planned - self._work)
        eta = eta_seconds(self._work, self._work_at_start, elapsed, remaining)
        eta_text = "ETA -" if eta is None else ("ETA ~" + duration(eta) if remaining else "finishing")
        return (f"  {duration(elapsed):>6}  {finished}/{self._total_text} done, {running} running, "
                f"{'~' if self.estimated else ''}{pending} pending  "
                f"{eta_text}")

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self._catch_up(trials)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self._last_status >= self.every_seconds:
            self._last_status = time.monotonic()
            print(self.status_line(trials), flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._catch_up(trials)
        self._finished.discard(trial.trial_id)  # an errored trial restarted
        self._running.add(trial.trial_id)

    def _on_finished(self, trials: list, trial, status: str) -> None:
        self._catch_up(trials)
        self._running.discard(trial.trial_id)
        self._finished.add(trial.trial_id)
        result = trial.last_result or {}
        self._count(trial, status, result)
        error = self.error_line(trial) if (status == "ERROR" and self.error_line) else ""
        fid = result.get("fid_mean")
        fid_text = f"fid_mean={fid:.3g}" if isinstance(fid, (int, float)) and math.isfinite(fid) else "fid_mean=-"
        width = len(self._total_text)
        print(f"[{len(self._finished):>{width}}/{self._total_text}] {duration(time.monotonic() - self._start):>6}  "
              f"{arm_label(trial.config)}  {fid_text}  {outcome(status, result, self._planned(trial), error)}"
              f"  (trial {trial.trial_id})", file=sys.stdout, flush=True)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        """Count the result; an arm that ASHA stopped inside a group (the group goes on): one line."""
        self._catch_up(trials)
        self._count(trial, "RUNNING", result)
        arms = trial_of(trial.config).get("arms", [])
        for entry in result.get("arms", []):
            if entry.get("stopped"):
                arm = arms[entry["arm"]]
                fid = entry.get("fid_mean")
                print(f"{'':>{2 * len(self._total_text) + 3}} {duration(time.monotonic() - self._start):>6}  "
                      f"{arm_label(arm)}  fid_mean={fid:.3g}  "
                      f"{outcome('TERMINATED', result, int(arm.get('iterations', self.iterations)))}"
                      f"  (trial {trial.trial_id}-a{entry['arm']})", file=sys.stdout, flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._on_finished(trials, trial, "TERMINATED")

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._on_finished(trials, trial, "ERROR")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        print(self.status_line(trials), flush=True)
