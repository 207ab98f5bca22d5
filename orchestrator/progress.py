"""What a running sweep prints: a readable line per finished arm and a status line with
elapsed time, done/running/pending counts and an ETA.

    [ 3/56]  2m05s  soft alpha=0.0123 lambda=(0.61,1.39) seed=1  fid_mean=3.21  done  (trial 9155c_00012)
    [ 4/56]  2m09s  hard lambda=(1,1) seed=0  fid_mean=4.02  stopped early at iteration 1/4  (trial ...)
      2m30s  4/56 done, 2 running, 50 pending  ETA ~31m

The ETA counts work in iterations: a finished arm (early-stopped ones included) has done all
it will do, a running one its reported iterations; the rate is what this driver has done since
it started, so a resumed sweep does not count the work of the driver before. Early stopping
(ASHA) makes the ETA an upper bound.
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
    lambda (shared modes), seed."""
    trial = trial_of(config)
    if "arms" in trial:  # a Tune trial training a group of arms (each has its own row in trials.parquet)
        return f"group of {len(trial['arms'])} arms"
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
    run; ``iterations``: planned iterations per trial (trials' own ``iterations`` win)."""

    def __init__(self, total: int, iterations: int, every_seconds: float = 30.0,
                 error_line: Callable[[Any], str] | None = None) -> None:
        self.total, self.iterations, self.every_seconds = total, iterations, every_seconds
        self.error_line = error_line
        self._start = time.monotonic()
        self._last_status = self._start
        self._work_at_start: float | None = None

    def __reduce__(self):  # stored with the RunConfig in tuner.pkl: constructor arguments only
        return (type(self), (self.total, self.iterations, self.every_seconds, self.error_line))

    def _planned(self, trial) -> int:
        return int(trial_of(trial.config).get("iterations", self.iterations))

    def _states(self, trials: list) -> list[tuple[str, dict[str, Any], int]]:
        return [(t.status, t.last_result or {}, self._planned(t)) for t in trials]

    def status_line(self, trials: list) -> str:
        states = self._states(trials)
        elapsed = time.monotonic() - self._start
        finished = sum(1 for s, _, _ in states if s in FINISHED_STATUSES)
        running = sum(1 for s, _, _ in states if s in ("RUNNING", "PAUSED"))
        pending = self.total - finished - running
        done_now = work(states)
        if self._work_at_start is None:
            self._work_at_start = done_now
        remaining = max(0.0, self.total * self.iterations - done_now if len(trials) < self.total
                        else sum(p for _, _, p in states) - done_now)
        eta = eta_seconds(done_now, self._work_at_start, elapsed, remaining)
        eta_text = "ETA -" if eta is None else ("ETA ~" + duration(eta) if remaining else "finishing")
        return (f"  {duration(elapsed):>6}  {finished}/{self.total} done, {running} running, {pending} pending  "
                f"{eta_text}")

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self._work_at_start is None:  # the work a resumed sweep found done is not this driver's
            self._work_at_start = work(self._states(trials))

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self._last_status >= self.every_seconds:
            self._last_status = time.monotonic()
            print(self.status_line(trials), flush=True)

    def _finished(self, trials: list, trial, status: str) -> None:
        finished = 1 + sum(1 for t in trials if t is not trial and t.status in FINISHED_STATUSES)
        result = trial.last_result or {}
        error = self.error_line(trial) if (status == "ERROR" and self.error_line) else ""
        fid = result.get("fid_mean")
        fid_text = f"fid_mean={fid:.3g}" if isinstance(fid, (int, float)) and math.isfinite(fid) else "fid_mean=-"
        width = len(str(self.total))
        print(f"[{finished:>{width}}/{self.total}] {duration(time.monotonic() - self._start):>6}  "
              f"{arm_label(trial.config)}  {fid_text}  {outcome(status, result, self._planned(trial), error)}"
              f"  (trial {trial.trial_id})", file=sys.stdout, flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._finished(trials, trial, "TERMINATED")

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._finished(trials, trial, "ERROR")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        print(self.status_line(trials), flush=True)
