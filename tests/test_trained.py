"""orchestrator.load_trial on a real smoke sweep: the loaded model is the trained one."""
from __future__ import annotations

import pickle
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import orchestrator
from orchestrator.sweep import main as sweep_main
from orchestrator.trained import checkpoints


@pytest.fixture(scope="module")
def smoke_run(ray_local, tmp_path_factory):
    storage = tmp_path_factory.mktemp("trained")
    assert sweep_main(["--space", "smoke", "--storage", str(storage), "--name", "smoke"]) == 0
    return storage / "smoke"


def test_loaded_model_samples_what_the_trial_sampled_at_its_last_checkpoint(smoke_run):
    trials = pd.read_parquet(smoke_run / "trials.parquet")
    for row in trials.to_dict("records")[:2]:
        gan = orchestrator.load_trial(smoke_run, row["trial_id"])
        assert gan.config.seed == row["seed"] and gan.config.mode == row["mode"]
        assert gan.step == row["steps_per_iteration"] * row["iterations"]
        kept = np.load(row["samples_path"])
        # the trainable drew these from the same fixed evaluation noise at that checkpoint
        np.testing.assert_allclose(gan.sample(kept["images"].shape[1]), kept["images"], atol=1e-5)
        assert gan.sample(3).shape == (2, 3, 1, 8, 8)
    # the same through a URI (how an s3:// run is named)
    trial_id = trials["trial_id"].iloc[0]
    by_uri = orchestrator.load_trial(f"file://{smoke_run}", trial_id)
    np.testing.assert_array_equal(by_uri.sample(2), orchestrator.load_trial(smoke_run, trial_id).sample(2))


def test_unknown_trial_names_the_ones_there(smoke_run):
    with pytest.raises(FileNotFoundError, match="trials with one: .*_0000"):
        orchestrator.load_trial(smoke_run, "nope_00000")


class Payload:
    def __reduce__(self):
        return (print, ("executed",))


def test_a_checkpoint_with_code_in_it_is_refused(smoke_run, tmp_path):
    trial_id = pd.read_parquet(smoke_run / "trials.parquet")["trial_id"].iloc[0]
    shutil.copytree(smoke_run / trial_id, tmp_path / trial_id)
    latest = checkpoints(tmp_path, trial_id)[-1]
    state = torch.load(f"{latest}/state.pt", weights_only=True)
    state["extra"] = Payload()
    torch.save(state, f"{latest}/state.pt")
    with pytest.raises(pickle.UnpicklingError):
        orchestrator.load_trial(tmp_path, trial_id)


def test_importing_orchestrator_imports_no_ray_or_torch():
    code = "import sys, orchestrator; print('ray' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
