"""Fault injection: planted pickles, hostile files and inputs, killed, raced and moved sweeps.

Each test plants, corrupts or races something a user (or whoever else can write the storage)
could, and asserts what the user relies on: nothing planted runs, nothing is lost or mixed, and
every failure is one line.
"""
from __future__ import annotations

import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from orchestrator import signing
from orchestrator.gcs_probe import NotRayGcs, check_ray_gcs
from orchestrator.results import MetricsFile
from orchestrator.runlock import LocalRunLock, RunLocked, S3RunLock
from orchestrator.testing import REPO_ROOT as REPO
from orchestrator.testing import (BILLION_LAUGHS, kill_group, read_metrics, start_driver, sweep_command,
                                 write_space)
from search_spaces.bounded_yaml import load_bounded
from trainables.tune_trainable import UntrustedCheckpointError, load_state


class _PlantedCommand:
    """Unpickling this runs ``touch MARKER``: the marker's existence proves code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_planted_pickle_in_a_checkpoint_is_refused_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    planted = tmp_path / "state.pt"
    torch.save({"config": {}, "G": _PlantedCommand(marker)}, planted)
    with pytest.raises(UntrustedCheckpointError) as error:
        load_state(planted, "cpu")
    assert not marker.exists(), "the planted pickle ran"
    message = str(error.value)
    assert "\n" not in message and str(planted) in message and "posix.system" in message

    empty = tmp_path / "empty.pt"  # what a full disk leaves behind
    empty.write_bytes(b"")
    with pytest.raises(UntrustedCheckpointError, match="empty.pt: refused to load"):
        load_state(empty, "cpu")


# ------------------------------------------------------------------ bounded YAML (item 8)

@pytest.mark.parametrize("text, needle", [
    (BILLION_LAUGHS, "expand to more than 100,000 nodes"),
    ("[" * 500 + "]" * 500, "nested deeper than 50 levels"),
    ("".join(" " * i + f"k{i}:\n" for i in range(300)), "nested deeper than 50 levels"),
    ("a: &a [*a]\n", "refers to itself"),
    ("x" * (2 << 20), "larger than"),
])
def test_hostile_yaml_is_one_line(text: str, needle: str) -> None:
    with pytest.raises(ValueError) as error:
        load_bounded(text, "hostile.yaml")
    message = str(error.value)
    assert message.startswith("hostile.yaml: ") and needle in message and "\n" not in message


def test_bounded_yaml_reads_the_shipped_files_like_safe_load() -> None:
    root = Path(__file__).resolve().parent.parent
    files = [root / "cluster.yaml", *sorted((root / "search_spaces").glob("*.yaml"))]
    for path in files:
        text = path.read_text()
        assert load_bounded(text, str(path)) == yaml.safe_load(text), path
    assert load_bounded("base: &b {lr: 0.001}\nrun: {<<: *b, seed: 1}\n", "x") == \
        {"base": {"lr": 0.001}, "run": {"lr": 0.001, "seed": 1}}


# ------------------------------------------------------------------ signing (item 1)

def test_signing_key_is_private_and_signatures_bind_name_and_content(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(signing.KEY_ENV, str(tmp_path / "cfg" / "signing.key"))
    key = signing.load_key()
    path = signing.key_path()
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert signing.load_key() == key  # stable across calls

    signatures = signing.Signatures()
    signatures.add(key, "tuner.pkl", b"state")
    reread = signing.Signatures.loads(signatures.dumps())
    assert reread.verify(key, "tuner.pkl", b"state")
    assert not reread.verify(key, "tuner.pkl", b"planted")
    assert not reread.verify(key, "experiment_state-x.json", b"state")  # a MAC is bound to its file
    assert not reread.verify(b"k" * 32, "tuner.pkl", b"state")  # and to this user's key
    contents = {"tuner.pkl": b"state", "experiment_state-1.json": b"{}", "sweep.json": b"{}"}
    assert signing.unsigned_files(key, contents, reread) == ["experiment_state-1.json"]

    path.chmod(0o644)
    with pytest.raises(signing.SignatureError, match="accessible to others"):
        signing.load_key()


# ------------------------------------------------------------------ run lock (item 2)

HOLD_LOCK = """
import sys, time
from orchestrator.runlock import LocalRunLock
LocalRunLock(sys.argv[1], "r").acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_local_run_lock_excludes_a_second_driver_and_survives_sigkill(tmp_path: Path) -> None:
    run = tmp_path / "run"
    root = Path(__file__).resolve().parent.parent
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], cwd=root,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked) as error:
            LocalRunLock(run, "r").acquire()
        assert f"pid {holder.pid}" in str(error.value) and "\n" not in str(error.value)
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the dead driver's lock: the next driver takes the run over.
    lock = LocalRunLock(run, "r")
    lock.acquire()
    with pytest.raises(RunLocked):
        LocalRunLock(run, "r").acquire()  # the same process, another open file: still exclusive
    lock.release()
    LocalRunLock(run, "r").acquire()


def test_s3_lease_is_exclusive_renewed_and_taken_over_only_when_expired() -> None:
    moto = pytest.importorskip("moto")
    import boto3

    with moto.mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="runs")
        first = S3RunLock("s3://runs/prefix/sweep", "sweep", ttl_s=2.0, client=client)
        first.acquire()
        with pytest.raises(RunLocked, match="being run by another driver"):
            S3RunLock("s3://runs/prefix/sweep", "sweep", ttl_s=2.0, client=client).acquire()
        time.sleep(2.5)  # longer than the TTL: the heartbeat renewed it meanwhile
        with pytest.raises(RunLocked):
            S3RunLock("s3://runs/prefix/sweep", "sweep", ttl_s=2.0, client=client).acquire()
        first._stop.set()  # the driver dies: no more renewals, no release
        first._thread.join()
        time.sleep(2.5)
        second = S3RunLock("s3://runs/prefix/sweep", "sweep", ttl_s=2.0, client=client)
        second.acquire()
        second.release()
        assert "Contents" not in client.list_objects_v2(Bucket="runs", Prefix="prefix/sweep/")


# ------------------------------------------------------------------ --address (item 9)

class FakeHttp2Server:
    """Loopback server that answers the HTTP/2 preface with a SETTINGS frame and then says
    nothing (what hung ray.init), recording every byte it receives."""

    def __init__(self, reply: bytes = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00") -> None:
        self.reply = reply
        self.received = bytearray()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        with conn:
            conn.sendall(self.reply)
            while chunk := conn.recv(65536):
                self.received += chunk

    def close(self) -> None:
        self.listener.close()


def test_gcs_probe_knows_ray_and_refuses_a_silent_http2_server(ray_local) -> None:
    host, port = ray_local.get_runtime_context().gcs_address.rsplit(":", 1)
    assert check_ray_gcs(host, int(port)) in ("open", "token")

    fake = FakeHttp2Server()
    try:
        started = time.monotonic()
        with pytest.raises(NotRayGcs, match="no answer to a Ray GCS call") as error:
            check_ray_gcs("127.0.0.1", fake.port, timeout_s=2.0)
        assert time.monotonic() - started < 10 and "\n" not in str(error.value)
        assert b"GetClusterId" in fake.received  # it was asked, and nothing else was sent:
        assert b"authorization" not in fake.received.lower()
    finally:
        fake.close()
    http = FakeHttp2Server(reply=b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    try:
        with pytest.raises(NotRayGcs, match="not a Ray GCS"):
            check_ray_gcs("127.0.0.1", http.port, timeout_s=2.0)
    finally:
        http.close()


# ------------------------------------------------------------------ real sweeps (items 1-6, 9)

def _wait_for(predicate, what: str, timeout: float = 400.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _log(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _unfinished_trials(run: Path, log: Path) -> list[Path]:
    """The directories of the trials that have a checkpoint and have not finished (by the log)."""
    finished = _log(log)
    return [d for d in sorted(run.glob("*_*")) if d.is_dir() and any(d.glob("checkpoint_*"))
            and f"(trial {d.name})" not in finished]


@pytest.mark.slow
def test_interrupted_corrupted_moved_and_raced_run_resumes_whole(tmp_path: Path) -> None:
    space = write_space(tmp_path, iterations=4)  # 6 trials x 4 iterations
    old, new = tmp_path / "old", tmp_path / "new"
    first_log = tmp_path / "first.log"
    first = start_driver(["--space", space, "--storage", str(old), "--name", "r"], first_log)
    try:
        # Ctrl-C once a trial has finished and another has two checkpoints (so the run holds a
        # whole trial and unfinished ones, and Tune's saved state most likely names a checkpoint)
        _wait_for(lambda: "[1/6]" in _log(first_log) and any(
            len(list(d.glob("checkpoint_*"))) >= 2 for d in _unfinished_trials(old / "r", first_log)),
            "a finished trial and a twice checkpointed unfinished one")
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=300) == 130, _log(first_log)[-3000:]
    finally:
        kill_group(first)
    text = _log(first_log)
    assert "interrupted (SIGINT)" in text and "--resume --name r --storage" in text, text[-2000:]
    assert "next: " not in text

    # Unfinished trials' checkpoints gone (as a full disk can leave a run: Tune's saved state
    # names a checkpoint that is not there) or cut short: those trials start again from scratch
    damaged = _unfinished_trials(old / "r", first_log)
    assert damaged, "no unfinished trial with a checkpoint left to damage"
    for checkpoint in damaged[0].glob("checkpoint_*"):
        shutil.rmtree(checkpoint)
    for state in (state for trial in damaged[1:] for state in trial.glob("checkpoint_*/state.pt")):
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    # A metrics file cut short (as a full disk or a crashed copy leaves it)
    victim = sorted((old / "r" / "metrics").glob("*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    # The run moves to other storage
    new.mkdir()
    shutil.move(str(old / "r"), str(new / "r"))
    second_log = tmp_path / "second.log"
    second = start_driver(["--resume", "--name", "r", "--storage", str(new)], second_log)
    try:
        _wait_for(lambda: "sweep r:" in _log(second_log), "the resumed driver to start")
        # A second --resume of the same run while it runs: refused, one line
        raced = subprocess.run(sweep_command("--resume", "--name", "r", "--storage", str(new)), cwd=REPO,
                               capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": ""})
        assert raced.returncode == 2, raced.stderr
        assert raced.stderr.count("\n") == 1 and "being run by another driver" in raced.stderr
        assert f"pid {second.pid}" in raced.stderr
        assert second.wait(timeout=400) == 0, _log(second_log)[-3000:]
    finally:
        kill_group(second)
    text = _log(second_log)
    lost = MetricsFile.parse(victim.name)
    assert f"{victim.name} cannot be read" in text and "metrics-unreadable" in text
    assert f"Rows lost: trial {lost.trial_id}, iterations {lost.first}..{lost.last}" in text
    assert (new / "r" / "metrics-unreadable" / victim.name).exists()
    notes = {ln.split(":")[1].split()[-1]: ln for ln in text.splitlines() if ln.startswith("note: trial ")}
    assert notes, text[-3000:]  # a trial whose saved state names no checkpoint yet has nothing to say
    for trial in damaged:
        problem = "is missing" if trial == damaged[0] else "is unreadable"
        assert trial.name not in notes or (problem in notes[trial.name] and "from scratch" in notes[trial.name])
    assert not (old / "r").exists()  # nothing written to where the run was

    metrics = read_metrics(new / "r")
    assert not metrics.duplicated(["trial_id", "iteration", "task"]).any()
    trials = pd.read_parquet(new / "r" / "trials.parquet")
    assert len(trials) == 6 and set(trials["status"]) == {"TERMINATED"}
    present = set(zip(metrics["trial_id"], metrics["iteration"]))
    expected = {(t, i) for t in trials["trial_id"] for i in range(1, 5)}
    missing = expected - present
    assert missing <= {(lost.trial_id, i) for i in range(lost.first, lost.last + 1)}, sorted(missing)

    # A pickle planted in the run's Tune state: --resume refuses it before unpickling anything.
    marker = tmp_path / "pwned"
    (new / "r" / "tuner.pkl").write_bytes(pickle.dumps(_PlantedCommand(marker)))
    refused = subprocess.run(sweep_command("--resume", "--name", "r", "--storage", str(new)), cwd=REPO,
                             capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": ""})
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "tuner.pkl" in refused.stderr and "is not signed by this user's key" in refused.stderr
    assert not marker.exists()


@pytest.mark.slow
def test_sigkill_right_after_start_then_resume_completes(tmp_path: Path) -> None:
    space = write_space(tmp_path, iterations=2)
    storage = tmp_path / "results"
    log = tmp_path / "first.log"
    first = start_driver(["--space", space, "--storage", str(storage), "--name", "early"], log)
    try:
        _wait_for(lambda: (storage / "early" / "tuner.pkl").exists(), "tuner.pkl")
    finally:
        kill_group(first)
        first.wait()
    # A fresh start and --resume agree: the sweep exists, and --resume finishes it.
    fresh = subprocess.run(sweep_command("--space", space, "--storage", str(storage), "--name", "early"), cwd=REPO,
                           capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": ""})
    assert fresh.returncode == 2 and "already exists" in fresh.stderr and "--resume" in fresh.stderr
    resumed = subprocess.run(sweep_command("--resume", "--name", "early", "--storage", str(storage)), cwd=REPO,
                             capture_output=True, text=True, timeout=600, env={**os.environ, "RAY_ADDRESS": ""})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = pd.read_parquet(storage / "early" / "trials.parquet")
    assert len(trials) == 6 and set(trials["status"]) == {"TERMINATED"}
    metrics = read_metrics(storage / "early")
    assert len(metrics) == 6 * 2 * 2 and not metrics.duplicated(["trial_id", "iteration", "task"]).any()


def test_address_of_a_fake_http2_server_never_gets_the_token(tmp_path: Path) -> None:
    fake = FakeHttp2Server()
    token = "rel-test-token-" + "7" * 32
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    try:
        started = time.monotonic()
        done = subprocess.run(sweep_command("--space", "smoke", "--storage", str(tmp_path / "results"),
                                            "--address", f"127.0.0.1:{fake.port}"),
                              cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
        elapsed = time.monotonic() - started
    finally:
        fake.close()
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "is" in done.stderr and "Ray" in done.stderr
    assert elapsed < 15, elapsed
    assert token.encode() not in bytes(fake.received)
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_two_new_sweeps_with_one_name_exactly_one_runs(tmp_path: Path) -> None:
    space = write_space(tmp_path, iterations=2)
    storage = tmp_path / "results"
    args = sweep_command("--space", space, "--storage", str(storage), "--name", "same")
    env = {**os.environ, "RAY_ADDRESS": ""}
    drivers = [subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True) for _ in range(2)]
    try:
        outcomes = sorted((d.wait(timeout=600), d.stderr.read()) for d in drivers)
    finally:
        for driver in drivers:
            kill_group(driver)
    (ok, _), (refused, err) = outcomes
    assert (ok, refused) == (0, 2), outcomes
    assert err.count("\n") == 1 and ("being run by another driver" in err or "already exists" in err), err
    trials = pd.read_parquet(storage / "same" / "trials.parquet")
    assert len(trials) == 6 and set(trials["status"]) == {"TERMINATED"}
    metrics = read_metrics(storage / "same")
    assert set(metrics["trial_id"]) == set(trials["trial_id"])  # no rows of a second sweep mixed in
    assert len(metrics) == 6 * 2 * 2 and not metrics.duplicated(["trial_id", "iteration", "task"]).any()


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def _fill(path: Path) -> Path:
    """Fill a file system to the last byte (what a full disk is)."""
    filler = path / "filler"
    with filler.open("wb", buffering=0) as out:
        for chunk in (1 << 20, 4096, 1):
            try:
                while out.write(b"\0" * chunk):
                    pass
            except OSError:
                pass
    return filler


@pytest.mark.slow
def test_full_disk_stops_cleanly_and_resumes_after_space_is_freed(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "64m"):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        space = write_space(tmp_path, iterations=4)
        log = tmp_path / "full.log"
        driver = start_driver(["--space", space, "--storage", str(disk), "--name", "full"], log)
        try:
            _wait_for(lambda: "[1/6]" in _log(log), "a finished trial")
            filler = _fill(disk)
            code = driver.wait(timeout=600)
        finally:
            kill_group(driver)
        text = _log(log)
        assert code not in (0, 2), text[-3000:]
        last = [ln for ln in text.splitlines() if ln.strip()][-1]
        assert last.startswith("error: ") or "trial(s) failed" in last, text[-3000:]
        assert "Traceback" not in last

        filler.unlink()  # space freed: the run resumes and completes, nothing lost or doubled
        resumed = subprocess.run(sweep_command("--resume", "--name", "full", "--storage", str(disk)), cwd=REPO,
                                 capture_output=True, text=True, timeout=600, env={**os.environ, "RAY_ADDRESS": ""})
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        trials = pd.read_parquet(disk / "full" / "trials.parquet")
        assert len(trials) == 6 and set(trials["status"]) == {"TERMINATED"}, trials[["trial_id", "status", "error"]]
        metrics = read_metrics(disk / "full")
        assert not metrics.duplicated(["trial_id", "iteration", "task"]).any()
        assert len(metrics) == 6 * 4 * 2
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_checkpoint_of_a_group_whose_arms_asha_all_stopped_is_one_to_go_on_from(tmp_path):
    """ASHA stopping every arm of a group leaves a checkpoint with the arms' final files and no
    state.pt; a resume must accept it (falling back to an older one replayed the rung against
    empty records and trained stopped arms on), and refuse one whose final files are gone."""
    import json

    import pyarrow.fs as pafs

    from orchestrator.guard import checkpoint_problem

    fs = pafs.LocalFileSystem()
    done = tmp_path / "checkpoint_000001"
    done.mkdir()
    (done / "meta.json").write_text(json.dumps({"iteration": 1, "arms_left": 0, "finished": ["final-a0.pt"]}))
    torch.save({"w": torch.zeros(1)}, done / "final-a0.pt")
    assert checkpoint_problem(fs, str(done)) is None
    (done / "final-a0.pt").unlink()
    assert checkpoint_problem(fs, str(done)) == "incomplete"
    older = tmp_path / "checkpoint_000000"  # no arms_left (or arms left) and no state: cut short
    older.mkdir()
    (older / "meta.json").write_text(json.dumps({"iteration": 0, "finished": []}))
    assert checkpoint_problem(fs, str(older)) == "incomplete"
    assert checkpoint_problem(fs, str(tmp_path / "checkpoint_000009")) == "missing"
