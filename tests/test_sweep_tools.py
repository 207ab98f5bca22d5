"""A real smoke sweep as a user's tools see it: the printed next command runs in a fresh shell,
a user's --callback sees every result, Tune's loggers get flat named hyperparameters,
finished trials keep --keep-checkpoints checkpoints, sweep.json says where the run came from,
and orchestrator.load_trial gives back the trained model."""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import shlex
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import orchestrator
from orchestrator.sweep import main as sweep_main
from orchestrator.trained import checkpoints


COUNTING_CALLBACK = """
import json
from ray.tune import Callback

class CountResults(Callback):
    def __init__(self):
        self.results = 0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results += 1

    def on_experiment_end(self, trials, **info):
        with open(OUT, "w") as f:
            json.dump({"results": self.results, "trials": len(trials)}, f)
"""
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep_output(ray_local, tmp_path_factory):
    """(run_dir, stdout, counts written by the user's callback) of one smoke sweep."""
    storage = tmp_path_factory.mktemp("tools")
    module_dir = tmp_path_factory.mktemp("user_module")
    counts = module_dir / "counts.json"
    (module_dir / "my_counting_callback.py").write_text(f"OUT = {str(counts)!r}\n" + COUNTING_CALLBACK)
    sys.path.insert(0, str(module_dir))
    stdout = module_dir / "stdout.txt"
    saved = os.dup(1)
    try:
        # what the user's terminal would show: Python's prints and fd 1 (Ray's own writes)
        with stdout.open("w", buffering=1) as f, contextlib.redirect_stdout(f):
            os.dup2(f.fileno(), 1)
            code = sweep_main(["--space", "smoke", "--storage", str(storage), "--name", "smoke",
                               "--callback", "my_counting_callback:CountResults", "--keep-checkpoints", "1"])
            sys.stdout.flush()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        sys.path.remove(str(module_dir))
    out = stdout.read_text()
    assert code == 0, out
    return storage / "smoke", out, json.loads(counts.read_text())


@pytest.fixture(scope="module")
def smoke_run(sweep_output):
    return sweep_output[0]


def test_printed_next_command_runs_in_a_fresh_shell(sweep_output, tmp_path):
    run_dir, out, _ = sweep_output
    next_line = [line for line in out.splitlines() if line.startswith("next: ")][-1]
    command = next_line.removeprefix("next: ")
    # a fresh shell: no activated venv, nothing of this session's environment but a minimal PATH
    done = subprocess.run(["/bin/sh", "-c", f"cd {shlex.quote(str(tmp_path))} && {command} --out report"],
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                               "MTGAN_CACHE": os.environ["MTGAN_CACHE"]},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "report" / "report.html").exists()


def test_user_callback_saw_every_result(sweep_output):
    run_dir, _, counts = sweep_output
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert counts == {"results": int(trials["iterations"].sum()), "trials": len(trials)}


def _hparams(event_file: Path) -> dict:
    """The HParams plugin's session_start_info values in a TensorBoard event file."""
    from tensorboardX.proto import event_pb2, plugin_hparams_pb2

    data, found, i = event_file.read_bytes(), {}, 0
    while i < len(data):  # TFRecord: length, crc, payload, crc
        (n,) = struct.unpack("<Q", data[i:i + 8])
        event = event_pb2.Event()
        event.ParseFromString(data[i + 12:i + 12 + n])
        i += 16 + n
        for value in event.summary.value:
            if value.tag == "_hparams_/session_start_info":
                plugin = plugin_hparams_pb2.HParamsPluginData()
                plugin.ParseFromString(value.metadata.plugin_data.content)
                for key, v in plugin.session_start_info.hparams.items():
                    found[key] = v.number_value if v.HasField("number_value") else v.string_value
    return found


def test_tensorboard_hparams_are_flat_and_named(smoke_run):
    trials = pd.read_parquet(smoke_run / "trials.parquet")
    soft = trials[trials["mode"] == "soft"].iloc[0]
    hparams = _hparams(next((smoke_run / soft["trial_id"]).glob("events.out.tfevents.*")))
    assert hparams["mode"] == "soft" and hparams["alpha"] == pytest.approx(soft["alpha"])
    assert hparams["lambda_0"] == pytest.approx(soft["lambda_0"])
    assert hparams["lambda_1"] == pytest.approx(soft["lambda_1"])
    assert hparams["seed"] == soft["seed"] and not any(k.startswith("trial/") for k in hparams)


def test_finished_trials_keep_one_checkpoint_and_the_run_says_where_it_came_from(sweep_output):
    run_dir, out, _ = sweep_output
    trials = pd.read_parquet(run_dir / "trials.parquet")
    for trial_id in trials["trial_id"]:
        kept = checkpoints(run_dir, trial_id)
        assert len(kept) == 1 and kept[0].endswith("checkpoint_000001")  # the last of 2 iterations
    assert set(trials["checkpoint_path"].map(lambda p: Path(p).name)) == {"checkpoint_000001"}
    assert "disk: ~" in out and "MB of checkpoints" in out
    assert f"TensorBoard: tensorboard --logdir {run_dir}" in out
    record = json.loads((run_dir / "sweep.json").read_text())["provenance"]
    assert shlex.split(record["command"])[:3] == [sys.executable, "-m", "orchestrator.sweep"]
    assert "my_counting_callback:CountResults" in record["command"]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert record["git"]["commit"] == head and record["versions"]["ray"] and record["started_utc"].endswith("Z")


def test_progress_names_arms_and_stays_quiet(sweep_output):
    _, out, _ = sweep_output
    finished = [line for line in out.splitlines() if line.startswith("[")]
    assert len(finished) == 6 and all("  done  (trial " in line for line in finished)
    assert any("independent seed=0" in line for line in finished)
    assert any(" lambda=(" in line and line.split()[2] in ("soft", "hard") for line in finished)
    assert "6/6 done, 0 running, 0 pending" in out
    for noise in ("Configuration for experiment", "View detailed results", "Traceback", "\x1b["):
        assert noise not in out


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
