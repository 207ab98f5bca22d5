"""Bad command lines: one `error:` line on stderr, exit code 2, nothing written, no trial run."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from orchestrator.sweep import main
from orchestrator.testing import free_port, write_space

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


def hostile_space(tmp_path: Path, make_files: bool) -> str:
    """The smoke sweep file whose free-text description is a "billion laughs" (10^9 strings
    once expanded; it used to hang the sweep)."""
    path = tmp_path / "laughs.yaml"
    if make_files:
        from orchestrator.testing import BILLION_LAUGHS

        smoke = (REPO / "search_spaces" / "smoke.yaml").read_text()
        laughs = "".join("  " + line + "\n" for line in BILLION_LAUGHS.splitlines())
        path.write_text(smoke + "\nlaughs_anchor_holder:\n" + laughs + "description: *i\n")
    return str(path)


def bad_inputs(tmp_path: Path, make_files: bool = True) -> dict[str, tuple[list[str], str]]:
    garbage = tmp_path / "garbage.npz"
    empty_task = tmp_path / "empty.npz"
    task_named_mean = tmp_path / "mean.npz"
    regular_file = tmp_path / "a-file"
    if make_files:
        garbage.write_bytes(b"this is not an npz file")
        np.savez(empty_task, a=np.zeros((5, 8, 8), np.uint8), b=np.zeros((0, 8, 8), np.uint8))
        np.savez(task_named_mean, mean=np.zeros((8, 8, 8), np.uint8), b=np.zeros((8, 8, 8), np.uint8))
        regular_file.write_text("not a directory")
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
        # root may write anywhere by its access bits, yet creates nothing under /proc
        "storage in /proc": (["--space", "smoke", "--storage", "/proc/mtgan-results"], "cannot write in /proc"),
        "storage under a file": (["--space", "smoke", "--storage", f"{regular_file}/results"], "is not a directory"),
        "cpus infinite": (["--space", "smoke", "--cpus-per-trial", "inf"], "--cpus-per-trial must be a finite"),
        "cpus nan": (["--space", "smoke", "--cpus-per-trial", "nan"], "--cpus-per-trial must be a finite"),
        "resume with other flags": (["--resume", "--name", "never-ran", "--cpus-per-trial", "2", "--space", "smoke"],
                                    "drop --cpus-per-trial, --space"),
        "reserved task name": (["--space", "smoke", "--data", f"npz:{task_named_mean}"], "'mean' is reserved"),
        "name ending in a newline": (["--space", "smoke", "--name", "run\n"], "--name must be letters"),
        "name too long": (["--space", "smoke", "--name", "a" * 300], "--name is 300 characters long"),
        "alias bomb in a sweep file": (["--space", hostile_space(tmp_path, make_files)],
                                       "aliases expand to more than"),
    }


@pytest.mark.parametrize("case", list(bad_inputs(Path("/nonexistent"), make_files=False)))
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, case):
    argv, needle = bad_inputs(tmp_path)[case]
    assert_rejected(argv, tmp_path / "results", capsys, needle)


def test_existing_name_is_refused(tmp_path, capsys):
    storage = tmp_path / "results"
    (storage / "taken").mkdir(parents=True)
    (storage / "taken" / "sweep.json").write_text("{}")  # what makes a directory a sweep
    assert_rejected(["--space", "smoke", "--name", "taken"], storage, capsys, "already exists")
    (storage / "other").mkdir()
    (storage / "other" / "notes.txt").write_text("mine")
    assert_rejected(["--space", "smoke", "--name", "other"], storage, capsys, "exists and is not a sweep")


def test_more_cpus_than_any_node(ray_local, tmp_path, capsys):
    # the session Ray has 2 CPUs: a trial asking for 3 would wait forever
    assert_rejected(["--space", "smoke", "--cpus-per-trial", "3"], tmp_path / "results", capsys,
                    "--cpus-per-trial 3: the largest node of the Ray cluster has 2 CPUs")


def test_address_of_a_web_server(tmp_path, capsys):
    # the port is open but not Ray's: ray.init would wait on it forever
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "http.server did not start"
                time.sleep(0.1)
        assert_rejected(["--space", "smoke", "--address", f"127.0.0.1:{port}"], tmp_path / "results", capsys,
                        "is not a Ray GCS")
    finally:
        server.kill()
        server.wait()


def test_address_that_never_answers(tmp_path, capsys):
    # accepts connections (the kernel does, from the backlog) and never says a word
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        assert_rejected(["--space", "smoke", "--address", f"127.0.0.1:{silent.getsockname()[1]}"],
                        tmp_path / "results", capsys, "cannot reach a Ray cluster")
        assert time.monotonic() - started < 30


def test_gpus_on_a_ray_without_gpus(ray_local, tmp_path, capsys):
    # the session Ray has 2 CPUs and no GPU: trials asking for one would wait forever
    assert_rejected(["--space", "smoke", "--gpus-per-trial", "0.5"], tmp_path / "results", capsys, "no GPU")


def assert_rejected_before_ray_starts(argv: list[str], storage: Path, needle: str) -> None:
    """As a user runs it, with no Ray around: the embedded Ray's start-up lines would show."""
    proc = subprocess.run([sys.executable, "-m", "orchestrator.sweep", *argv, "--storage", str(storage)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert needle in proc.stderr
    assert not storage.exists()


def test_gpus_on_a_machine_without_gpus_before_ray_starts(tmp_path):
    import torch

    if torch.cuda.device_count() > 0:
        pytest.skip("this machine has a GPU")
    assert_rejected_before_ray_starts(["--space", "smoke", "--gpus-per-trial", "0.25"], tmp_path / "results", "no GPU")


def test_more_cpus_than_this_machine_before_ray_starts(tmp_path):
    from ray._private.utils import get_num_cpus

    assert_rejected_before_ray_starts(["--space", "smoke", "--cpus-per-trial", str(get_num_cpus() + 1)],
                                      tmp_path / "results", "CPUs for Ray")
