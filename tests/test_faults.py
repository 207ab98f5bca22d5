"""Fault injection: planted pickles, hostile files and inputs, killed, raced and moved sweeps.

Each test plants, corrupts or races something a user (or whoever else can write the storage)
could, and asserts what the user relies on: nothing planted runs, nothing is lost or mixed, and
every failure is one line.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from orchestrator import signing
from orchestrator.gcs_probe import NotRayGcs, check_ray_gcs
from orchestrator.runlock import LocalRunLock, RunLocked, S3RunLock
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

BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))


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
