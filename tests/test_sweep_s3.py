"""`--storage s3://...` end to end, without a cloud: moto's S3 server on loopback stands in for
the shared storage cluster.yaml needs. The sweep runs as a user runs it (a subprocess with its
own embedded Ray), pointed at the endpoint by AWS_ENDPOINT_URL; the analysis reads the run in
place through a URI that carries pyarrow's endpoint options instead."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from orchestrator.analyze import main as analyze_main

REPO = Path(__file__).resolve().parents[1]
BUCKET, PREFIX, NAME = "sweeps", "runs", "s3smoke"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3_endpoint() -> str:
    """host:port of a moto S3 server on 127.0.0.1 holding an empty bucket BUCKET."""
    moto_server = pytest.importorskip("moto.server", reason="the dev extra installs moto[server]")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"127.0.0.1:{port}"
    s3_filesystem(endpoint).create_dir(BUCKET)
    yield endpoint
    server.stop()


def s3_filesystem(endpoint: str) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1", scheme="http",
                             endpoint_override=endpoint, allow_bucket_creation=True)


def run_sweep(endpoint: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": f"http://{endpoint}", "RAY_ADDRESS": ""}
    return subprocess.run([sys.executable, "-m", "orchestrator.sweep", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)


def test_smoke_sweep_into_s3(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = f"s3://{BUCKET}/{PREFIX}"
    done = run_sweep(s3_endpoint, "--space", "smoke", "--storage", storage, "--name", NAME)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    fs, run = s3_filesystem(s3_endpoint), f"{BUCKET}/{PREFIX}/{NAME}"
    objects = [i for i in fs.get_file_info(pafs.FileSelector(run, recursive=True)) if i.is_file]
    names = {i.path[len(run) + 1:] for i in objects}
    assert {"trials.parquet", "sweep.json"} <= names
    assert not [n for n in names if n.rsplit("/", 1)[-1].startswith(".tmp-")]
    metric_files = [n for n in names if n.startswith("metrics/") and n.endswith(".parquet")]

    record = json.loads(fs.open_input_stream(f"{run}/sweep.json").read())
    trials = pq.read_table(f"{run}/trials.parquet", filesystem=fs).to_pandas()
    n_trials, n_tasks, iterations = len(record["trials"]), record["n_tasks"], record["spec"]["iterations"]
    assert len(trials) == n_trials and set(trials["status"]) == {"TERMINATED"}
    assert len(metric_files) == n_trials  # each trial's per-iteration files compacted into one
    # Tune's own state and the trials' checkpoints live in the bucket too; trials.parquet points there
    assert any(n.startswith("experiment_state") for n in names)
    for trial_id in trials["trial_id"]:
        assert f"{trial_id}/checkpoint_{iterations - 1:06d}/state.pt" in names
    assert trials["samples_path"].str.startswith(f"s3://{run}/").all()

    metrics = pads.dataset(f"{run}/metrics", filesystem=fs, format="parquet").to_table().to_pandas()
    assert len(metrics) == n_trials * iterations * n_tasks
    assert not metrics.duplicated(["trial_id", "iteration", "task"]).any()
    assert set(metrics["trial_id"]) == set(trials["trial_id"])

    # the analysis reads the run in place; the endpoint rides in the URI (and holds for the
    # checkpoints' samples_path), the keys in the environment
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    uri = f"{storage}/{NAME}?endpoint_override={s3_endpoint}&scheme=http"
    assert analyze_main([uri, "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "no readable samples_path" not in report  # sample grids came from the bucket's checkpoints
    assert (tmp_path / "report" / "samples.png").is_file()


@pytest.mark.parametrize("options", ["", "?endpoint_override={endpoint}&scheme=http"])
def test_resume_unknown_name_under_s3(s3_endpoint: str, options: str) -> None:
    storage = f"s3://{BUCKET}/{PREFIX}" + options.format(endpoint=s3_endpoint)
    done = run_sweep(s3_endpoint, "--storage", storage, "--name", "never-ran", "--resume")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: --resume: no sweep named 'never-ran' under {storage}"]


def test_analyze_missing_s3_run_is_one_line(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    uri = f"s3://{BUCKET}/nothing-here?endpoint_override={s3_endpoint}&scheme=http"
    assert analyze_main([uri, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0], err
    assert not (tmp_path / "out").exists()


def test_storage_in_a_missing_bucket_is_one_line(s3_endpoint: str) -> None:
    done = run_sweep(s3_endpoint, "--space", "smoke", "--storage", "s3://no-such-bucket/runs", "--name", "x")
    assert done.returncode == 2, done.stderr[-3000:]
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --storage s3://no-such-bucket/runs: "), err
    buckets = [i.path for i in s3_filesystem(s3_endpoint).get_file_info(pafs.FileSelector("/"))]
    assert "no-such-bucket" not in buckets  # nothing written
