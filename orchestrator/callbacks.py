"""The sweep's small Tune callbacks, and the user's own (``--callback module:Class``).

FlatHyperparameters hands Tune's loggers (TensorBoard's HParams view reads them) the trial's
configuration as flat named values -- ``mode``, ``alpha``, ``lambda_<task>``, ... -- the columns
of trials.parquet, instead of Tune's nested ``trial/...`` config where λ is a list that
TensorBoard drops. CheckpointPruner deletes a finished trial's checkpoints beyond the newest
``keep`` (Tune keeps more while trials run: PBT and --resume need recent ones).

A user's callback class is imported from the module (the current directory is on the path under
``python -m``), must subclass ``ray.tune.Callback`` and is built with no arguments -- a few lines
of the user's own subclass pass the settings (see the README's MLflow and W&B recipes). Tune
pickles callbacks with the sweep's state, so ``--resume`` brings them back.
"""
from __future__ import annotations

import importlib
import math
import re
from typing import Any

import pyarrow.fs as pafs
from ray.tune import Callback

from orchestrator.trained import CHECKPOINT_DIR

SPEC = re.compile(r"^(?P<module>[A-Za-z_][\w.]*):(?P<name>[A-Za-z_]\w*)$")


def load_callback(spec: str) -> Callback:
    """An instance of the Callback class ``module:Class``; ValueError (one line) otherwise."""
    match = SPEC.match(spec)
    if match is None:
        raise ValueError(f"--callback {spec!r}: expected module:Class, e.g. my_callbacks:CountResults")
    try:
        module = importlib.import_module(match["module"])
    except Exception as e:  # ImportError, or whatever the module raises while importing
        raise ValueError(f"--callback {spec}: cannot import {match['module']} "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    cls = getattr(module, match["name"], None)
    if not (isinstance(cls, type) and issubclass(cls, Callback)):
        what = "not found" if cls is None else f"is not a ray.tune.Callback subclass ({type(cls).__name__})"
        raise ValueError(f"--callback {spec}: {match['name']} in {match['module']} {what}")
    try:
        return cls()
    except Exception as e:
        raise ValueError(f"--callback {spec}: {match['name']}() failed "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def flat_hyperparameters(config: dict[str, Any], task_names: list[str]) -> dict[str, Any]:
    """The trial's searched and fixed values as flat scalars. None and non-finite values are left
    out (TensorBoard refuses them): hard sharing's α (inf in trials.parquet) is absent, its
    ``mode`` says what it is."""
    from orchestrator.results import config_columns

    return {k: v for k, v in config_columns(config, task_names).items()
            if v is not None and k != "baseline_key" and not (isinstance(v, float) and not math.isfinite(v))}


class FlatHyperparameters(Callback):
    """Sets each trial's ``evaluated_params`` (what Tune's loggers record as hyperparameters) to
    flat_hyperparameters; again on each result, since PBT changes a trial's configuration."""

    def __init__(self, task_names: list[str]) -> None:
        self.task_names = list(task_names)

    def __reduce__(self):
        return (type(self), (self.task_names,))

    def _set(self, trial) -> None:
        config = trial.config.get("trial", trial.config)
        if "arms" in config:  # a group of arms has no one set of hyperparameters: trials.parquet has each arm's
            trial.evaluated_params = {"arms": len(config["arms"])}
            return
        trial.evaluated_params = flat_hyperparameters(trial.config, self.task_names)

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._set(trial)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        self._set(trial)


class CheckpointPruner(Callback):
    """When a trial ends, deletes its checkpoints but the newest ``keep`` (an errored trial keeps
    them all: --resume restarts it from its latest). The trial's directory comes from Tune's own
    storage context, so nothing pickled names a path (a resumed run may have moved)."""

    def __init__(self, keep: int) -> None:
        self.keep = keep

    def __reduce__(self):
        return (type(self), (self.keep,))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        fs, trial_dir = trial.storage.storage_filesystem, trial.storage.trial_fs_path
        infos = fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
        found = sorted((int(m[1]), i.path) for i in infos
                       if i.type == pafs.FileType.Directory and (m := CHECKPOINT_DIR.match(i.base_name)))
        for _, path in found[:-self.keep]:
            fs.delete_dir(path)
