"""Load a trained arm of a sweep to sample from it: ``orchestrator.load_trial(run_dir, trial_id)``.

    from orchestrator import load_trial
    gan = load_trial("results/default-20261127-101500", "9155c_00012")
    images = gan.sample(16)   # (n_tasks, 16, C, H, W), float32 in [-1, 1]

The model is the trial's latest checkpoint (``<run dir>/<trial_id>/checkpoint_*/state.pt``),
read with ``torch.load(weights_only=True)`` (tensors and plain values only: nothing in the file
is executed). ``run_dir`` is a local directory or a URI pyarrow opens (s3://, gs://, file://).
No Ray is needed: this works on a laptop with the run directory copied from a cluster.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

from orchestrator.schema import RunLocation

CHECKPOINT_DIR = re.compile(r"^checkpoint_(\d+)$")
STATE_FILE = "state.pt"  # the trainable's checkpoint layout (trainables.tune_trainable)
FINAL_STATE_FILE = "final-a{}.pt"  # tune_trainable.final_state_file: an arm a scheduler stopped
# An arm of a grouped trial: <group trial id>-a<index> (orchestrator.results.arm_trial_id).
ARM_TRIAL_ID = re.compile(r"^(.+)-a(\d+)$")


def checkpoints(run_dir: str | Path, trial_id: str) -> list[str]:
    """The trial's checkpoint directories, oldest first (as the run's filesystem names them)."""
    run = RunLocation(run_dir)
    if not run.is_dir(trial_id):
        return []
    found = [(int(m[1]), run.sub(trial_id, name)) for name in run.subdirectories(trial_id)
             if (m := CHECKPOINT_DIR.match(name))]
    return [path for _, path in sorted(found)]


def load_trial(run_dir: str | Path, trial_id: str, device: str = "cpu"):
    """The trial's model (a ``trainables.train.MultiTaskGAN``) at its latest checkpoint.

    Raises FileNotFoundError when the run has no checkpoint for ``trial_id`` (the message
    lists the trials that have one)."""
    import torch

    from trainables.config import GANConfig
    from trainables.train import MultiTaskGAN, arm_state

    run = RunLocation(run_dir)
    kept = checkpoints(run_dir, trial_id)
    group_arm = ARM_TRIAL_ID.match(trial_id)
    if not kept and group_arm:  # an arm of a trial that trained a group: the group's checkpoints
        kept = checkpoints(run_dir, group_arm[1])
    if not kept:
        trials = [name for name in (run.subdirectories() if run.is_dir() else []) if checkpoints(run_dir, name)]
        raise FileNotFoundError(f"no checkpoint of trial {trial_id!r} in {run_dir} "
                                f"(trials with one: {', '.join(trials) or 'none'})")
    final = f"{kept[-1]}/{FINAL_STATE_FILE.format(group_arm[2])}" if group_arm else None
    if final is not None and run.fs.get_file_info(final).is_file:  # an arm ASHA stopped: its final state
        state_path = final
    else:
        state_path = f"{kept[-1]}/{STATE_FILE}"
    with run.fs.open_input_file(state_path) as f:
        state = torch.load(io.BytesIO(f.read()), map_location=device, weights_only=True)
    if "configs" in state:  # a group's state: take the arm's slice
        try:
            state = arm_state(state, int(group_arm[2]))
        except KeyError as e:
            raise FileNotFoundError(f"trial {trial_id!r}: {e.args[0]}") from None
    gan = MultiTaskGAN(GANConfig.from_dict(state["config"]), device=device)
    gan.load_state_dict(state)
    return gan
