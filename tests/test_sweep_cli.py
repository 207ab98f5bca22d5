"""Bad command lines: one `error:` line on stderr, exit code 2, nothing written, no trial run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from orchestrator.sweep import main
from tests.test_spaces import write_space

REPO = Path(__file__).resolve().parents[1]


def snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def assert_rejected(argv: list[str], storage: Path, capsys, needle: str) -> None:
    before = snapshot(storage)
    assert main(["--storage", str(storage), *argv]) == 2  # a later --storage in argv wins
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert needle in err[0], err[0]
    assert snapshot(storage) == before  # nothing written


def bad_inputs(tmp_path: Path, make_files: bool = True) -> dict[str, tuple[list[str], str]]:
    garbage = tmp_path / "garbage.npz"
    empty_task = tmp_path / "empty.npz"
    if make_files:
        garbage.write_bytes(b"this is not an npz file")
        np.savez(empty_task, a=np.zeros((5, 8, 8), np.uint8), b=np.zeros((0, 8, 8), np.uint8))
    w = (lambda *a, **k: write_space(tmp_path, *a, **k)) if make_files else (lambda *a, **k: "x.yaml")
    return {
        "unknown space": (["--space", "nope"], "unknown space 'nope'"),
        "unknown key": (["--space", w("k", colour="red")], "unknown key colour"),
        "lambda count": (["--space", w("l", search="grid", sharing={
            "alpha": [0.1], "lambdas": {"grid": [[1.0, 1.0, 1.0]]}})], "3 lambda values for 2 tasks"),
        "negative alpha": (["--space", w("a", search="grid", sharing={
            "alpha": [-0.1], "lambdas": "equal"})], "alpha must be a finite number >= 0"),
        "gpus above 1": (["--space", "smoke", "--gpus-per-trial", "1.5"], "--gpus-per-trial"),
        "gpus negative": (["--space", "smoke", "--gpus-per-trial", "-0.25"], "--gpus-per-trial"),
        "zero samples": (["--space", "smoke", "--num-samples", "0"], "--num-samples must be >= 1"),
        "zero iterations": (["--space", "smoke", "--iterations", "0"], "--iterations must be >= 1"),
        "bad seeds": (["--space", "smoke", "--seeds", "0,x"], "--seeds"),
        "missing data file": (["--space", "smoke", "--data", f"npz:{tmp_path}/missing.npz"], "missing.npz"),
        "malformed data file": (["--space", "smoke", "--data", f"npz:{garbage}"], "garbage.npz"),
        "empty task": (["--space", "smoke", "--data", f"npz:{empty_task}"], "empty.npz"),
        "unknown data spec": (["--space", "smoke", "--data", "mnist"], "mnist"),
        "resume unknown": (["--resume", "--name", "never-ran"], "no sweep named 'never-ran'"),
        "unreachable address": (["--space", "smoke", "--address", "127.0.0.1:9"], "cannot reach"),
        "pbt with optuna": (["--space", "smoke", "--search", "optuna", "--scheduler", "pbt"], "pbt"),
        "unknown flag": (["--space", "smoke", "--epochs", "3"], "--epochs"),
        "unknown storage scheme": (["--space", "smoke", "--storage", "nosuch://bucket/x"], "--storage"),
    }


@pytest.mark.parametrize("case", list(bad_inputs(Path("/nonexistent"), make_files=False)))
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, case):
    argv, needle = bad_inputs(tmp_path)[case]
    assert_rejected(argv, tmp_path / "results", capsys, needle)


def test_existing_name_is_refused(tmp_path, capsys):
    storage = tmp_path / "results"
    (storage / "taken").mkdir(parents=True)
    assert_rejected(["--space", "smoke", "--name", "taken"], storage, capsys, "already exists")


def test_gpus_on_a_ray_without_gpus(ray_local, tmp_path, capsys):
    # the session Ray has 2 CPUs and no GPU: trials asking for one would wait forever
    assert_rejected(["--space", "smoke", "--gpus-per-trial", "0.5"], tmp_path / "results", capsys, "no GPU")


def test_gpus_on_a_machine_without_gpus_before_ray_starts(tmp_path):
    import torch

    if torch.cuda.device_count() > 0:
        pytest.skip("this machine has a GPU")
    storage = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "orchestrator.sweep", "--space", "smoke", "--gpus-per-trial",
                           "0.25", "--storage", str(storage)], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "no GPU" in proc.stderr
    assert not storage.exists()
