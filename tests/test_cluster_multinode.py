"""The real smoke sweep on multi-node Ray clusters emulated on one machine.

* two worker nodes (``ray.cluster_utils.Cluster``, head with 0 CPUs): trials run on both;
* node loss: a worker node is removed while its trial runs; the trial resumes from its last
  checkpoint on the surviving node;
* the fake autoscaler (``RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config``) scales
  (fake) GPU workers up from the head alone for a --gpus-per-trial 0.5 sweep and back down.

Isolation (other people run Ray on this machine): every cluster lives in a subprocess with
its own short RAY_TMPDIR (the unix sockets' path limit is ~107 characters), its own token
(RAY_AUTH_MODE=token, as on cluster.yaml's nodes), free ports, and its own process group,
torn down by the PID we started -- never `ray stop`. The pytest process itself never joins
these clusters, so the session's local Ray (``ray_local``) is unaffected.

Worker nodes get distinct loopback addresses (127.0.0.2, 127.0.0.3), so the ``node_ip``
column tells them apart as it would on real hosts.

This file is also the helper the tests start: ``python -m tests.test_cluster_multinode hold``
holds a Cluster and obeys ``remove IP`` / ``quit`` lines on stdin; ``... watch ADDRESS``
prints the alive nodes, their GPUs and whether an autoscaler reports, twice a second.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from orchestrator.testing import free_port as _free_port
from orchestrator.testing import read_run as _read_run

REPO = Path(__file__).resolve().parent.parent
WORKER_IPS = ("127.0.0.2", "127.0.0.3")
pytestmark = pytest.mark.slow


# ----------------------------------------------------------------------------- helpers
def _isolated_env(ray_tmp: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_TMPDIR=ray_tmp, TMPDIR=ray_tmp, RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN=secrets.token_hex(32), PYTHONPATH=str(REPO),
               # Tune writes an experiment snapshot per checkpoint and warns about each.
               TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S="0")
    return env


def _stop_process_group(process: subprocess.Popen, graceful_s: float) -> None:
    """Stop a process we started with start_new_session=True, then anything left in its group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(graceful_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the group is ours alone (its own session)
    except ProcessLookupError:
        pass


def _read_json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line being written right now
    return rows


def _run_sweep(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.sweep", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _assert_complete_run(metrics, trials, record: dict, iterations: int) -> None:
    """Every planned trial finished every iteration, each (trial, iteration, task) row once."""
    assert set(trials["status"]) == {"TERMINATED"}, trials[["trial_id", "status", "error"]]
    assert len(trials) == len(record["trials"])
    assert not metrics.duplicated(["trial_id", "iteration", "task"]).any()
    assert len(metrics) == len(trials) * iterations * len(record["tasks"])
    for trial_id, rows in metrics.groupby("trial_id"):
        assert sorted(set(rows["iteration"])) == list(range(1, iterations + 1)), trial_id


def _space_file(directory: Path, name: str, **changes: Any) -> str:
    import yaml

    import search_spaces as ss

    raw = yaml.safe_load((ss.SPACES_DIR / "smoke.yaml").read_text())
    raw.update(changes)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


class HeldCluster:
    """A ray.cluster_utils.Cluster (head 0 CPUs + 1-CPU workers) held by a subprocess."""

    def __init__(self, worker_ips: tuple[str, ...]) -> None:
        self.tmp = tempfile.mkdtemp(prefix="rcl", dir="/tmp")
        self.env = _isolated_env(self.tmp)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.test_cluster_multinode", "hold", *worker_ips], cwd=REPO,
            env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(Path(self.tmp) / "hold.err", "w"),
            text=True, start_new_session=True)
        started = self._reply(timeout=120)
        self.address: str = started["address"]
        self.worker_ips: list[str] = started["workers"]

    def _reply(self, timeout: float) -> dict[str, Any]:
        import select

        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            err = (Path(self.tmp) / "hold.err").read_text()[-3000:]
            raise RuntimeError(f"cluster holder gave no answer within {timeout}s:\n{err}")
        return json.loads(line)

    def remove(self, ip: str) -> float:
        """Kill the worker node at `ip` (all its processes, no grace); returns the time it was gone."""
        self.process.stdin.write(f"remove {ip}\n")
        self.process.stdin.flush()
        reply = self._reply(timeout=60)
        self.worker_ips.remove(ip)
        return reply["removed_at"]

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(60)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            pass
        _stop_process_group(self.process, graceful_s=10)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def two_nodes() -> Iterator[HeldCluster]:
    # One cluster per test: the node-loss test removes a worker, and a second node-loss run on
    # the one worker left had nowhere to resume (the grouped case hung waiting for a CPU).
    cluster = HeldCluster(WORKER_IPS)
    try:
        yield cluster
    finally:
        cluster.close()


# ------------------------------------------------------------------------------- tests
def test_smoke_sweep_runs_on_both_nodes(two_nodes: HeldCluster, tmp_path: Path) -> None:
    storage = tmp_path / "results"
    done = _run_sweep(two_nodes.env, "--space", "smoke", "--address", two_nodes.address,
                      "--storage", str(storage), "--name", "multi", "--cpus-per-trial", "1", timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics, trials, record = _read_run(storage / "multi")
    _assert_complete_run(metrics, trials, record, iterations=2)
    # Gathered on the driver into one dataset; the trials ran on both worker nodes, never the head.
    assert set(trials["node_ip"]) == set(WORKER_IPS), trials[["trial_id", "node_ip"]]


@pytest.mark.parametrize("arms_per_trial", [1, 2], ids=["one-arm", "grouped"])
def test_node_loss_resumes_trials_from_their_checkpoints(two_nodes: HeldCluster, tmp_path: Path,
                                                         arms_per_trial: int) -> None:
    iterations = 8
    # Iterations slow enough (~0.5 s) that the node dies mid-trial.
    space = _space_file(tmp_path, "nodeloss", seeds=[0], num_samples=1, iterations=iterations,
                        steps_per_iteration=300, max_failures=2, arms_per_trial=arms_per_trial,
                        sharing={"modes": ["soft"], "alpha": {"loguniform": [0.3, 300.0]},
                                 "lambdas": {"dirichlet": 1.0}})
    storage = tmp_path / "results"
    run_dir = storage / "nodeloss"
    sweep = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.sweep", "--space", space, "--address", two_nodes.address,
         "--storage", str(storage), "--name", "nodeloss", "--cpus-per-trial", "1"],
        cwd=REPO, env=two_nodes.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Tune's result.json (appended by the driver for every result it receives) shows when a
        # trial on a worker node is mid-way: kill that node then.
        victim = None
        deadline = time.monotonic() + 180
        while victim is None and time.monotonic() < deadline and sweep.poll() is None:
            for result_file in run_dir.glob("*/result.json"):
                results = _read_json_lines(result_file)
                if 2 <= len(results) < iterations and results[-1].get("node_ip") in two_nodes.worker_ips:
                    victim = results[-1]["trial_id"], results[-1]["node_ip"], len(results)
                    break
            time.sleep(0.1)
        assert victim is not None, "no trial reached iteration 2 on a worker node"
        trial_id, dead_ip, _ = victim
        removed_at = two_nodes.remove(dead_ip)
        output, _ = sweep.communicate(timeout=240)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, output[-3000:]

    metrics, trials, record = _read_run(run_dir)
    _assert_complete_run(metrics, trials, record, iterations=iterations)
    (survivor,) = two_nodes.worker_ips

    # Every result the driver received for the victim, in order: iterations before the loss on
    # the dead node, then the rest on the survivor, continuing from the last checkpoint. That
    # checkpoint may be behind the last result (the node can die after a result arrived but
    # before its checkpoint was registered): those iterations then run again, but nothing
    # restarts from scratch (and the Parquet keeps one row per iteration, checked above).
    history = _read_json_lines(run_dir / trial_id / "result.json")
    before = [r["iteration"] for r in history if r["node_ip"] == dead_ip]
    after = [r["iteration"] for r in history if r["node_ip"] != dead_ip]
    assert before and after, "the trial did not run on both sides of the node loss"
    assert {r["node_ip"] for r in history if r["node_ip"] != dead_ip} == {survivor}
    assert before == list(range(1, len(before) + 1)), f"before the loss: {before}"
    assert after == list(range(after[0], iterations + 1)), f"after the loss: {after}"
    assert 2 <= after[0] <= max(before) + 1, f"resumed at {after[0]} after {before}: not from its checkpoint"
    # A Tune trial is one arm, or a group of arms (each its own row, group_id naming the trial).
    victim_arms = trials[trials["group_id"].fillna(trials["trial_id"]) == trial_id]
    assert len(victim_arms) == arms_per_trial and set(victim_arms["node_ip"]) == {survivor}
    # The restored trial's rows were written after the node was gone.
    victim_rows = metrics[metrics["trial_id"].isin(victim_arms["trial_id"])]
    resumed = victim_rows[victim_rows["iteration"] > max(before)]
    assert (resumed["timestamp"].map(lambda t: t.timestamp()) > removed_at).all()  # a UTC timestamp since schema 2


def test_fake_autoscaler_scales_up_from_head_and_back_down(tmp_path: Path) -> None:
    import ray._private.services
    import yaml
    from ray.autoscaler._private.util import validate_config

    ray_tmp = tempfile.mkdtemp(prefix="rfa", dir="/tmp")
    env = _isolated_env(ray_tmp)
    env.update(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1")
    ip, port = ray._private.services.get_node_ip_address(), _free_port()
    address = f"{ip}:{port}"
    # Complete on purpose: the Ray 2.60 wheel lacks fake_multi_node/example.yaml, the defaults
    # prepare_config would merge in, and the v1 monitor reads this file as it is.
    config = {
        "cluster_name": "fake-mtgan", "max_workers": 2, "upscaling_speed": 1.0,
        "idle_timeout_minutes": 0.05,  # 3 s
        "provider": {"type": "fake_multinode", "gcs_address": address, "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "auth": {}, "docker": {},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            # Like cluster.yaml's GPU types, scaled from zero. The GPUs are fake (Ray only counts
            # them); the trainable then falls back to the CPU.
            "gpu.worker": {"resources": {"CPU": 1, "GPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2},
        },
        "head_node_type": "ray.head.default",
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
        "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }
    validate_config(config)
    config_path = Path(ray_tmp) / "autoscaler.yaml"
    config_path.write_text(yaml.safe_dump(config))

    ray_cli = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        [ray_cli, "start", "--head", f"--node-ip-address={ip}", f"--port={port}", "--num-cpus=0",
         f"--autoscaling-config={config_path}", "--include-dashboard=false",
         f"--dashboard-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}",
         "--disable-usage-stats", "--block"],
        env=env, stdout=open(Path(ray_tmp) / "head.out", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    watch_file = Path(ray_tmp) / "nodes.jsonl"
    watcher = None
    try:
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in (Path(ray_tmp) / "head.out").read_text():
            assert head.poll() is None and time.monotonic() < deadline, (Path(ray_tmp) / "head.out").read_text()[-3000:]
            time.sleep(0.5)
        watcher = subprocess.Popen([sys.executable, "-m", "tests.test_cluster_multinode", "watch", address],
                                   cwd=REPO, env=env, stdout=open(watch_file, "w"), stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        # The sweep sees the autoscaler by its status in the GCS (published after its first round).
        while not (_read_json_lines(watch_file) or [{}])[-1].get("autoscaler"):
            assert watcher.poll() is None and time.monotonic() < deadline, "no autoscaler status"
            time.sleep(0.2)
        assert _read_json_lines(watch_file)[-1]["alive"] == 1, "the cluster should start as the head alone"
        assert _read_json_lines(watch_file)[-1]["gpus"] == 0

        storage = tmp_path / "results"
        # Two trials share each (fake) GPU, as --gpus-per-trial 0.25 packs four on a real one.
        done = _run_sweep(env, "--space", "smoke", "--address", address, "--storage", str(storage),
                          "--name", "autoscaled", "--cpus-per-trial", "0.5", "--gpus-per-trial", "0.5",
                          timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        sweep_end = time.time()
        metrics, trials, record = _read_run(storage / "autoscaled")
        _assert_complete_run(metrics, trials, record, iterations=2)
        assert set(trials["gpus"]) == {0.5}

        during = [r for r in _read_json_lines(watch_file) if r["t"] <= sweep_end]
        assert max(r["alive"] for r in during) >= 2, "no worker node was launched"
        assert max(r["gpus"] for r in during) >= 1
        deadline = time.monotonic() + 90
        while _read_json_lines(watch_file)[-1]["alive"] > 1:
            assert time.monotonic() < deadline, "idle workers were not removed"
            time.sleep(0.5)
        assert _read_json_lines(watch_file)[-1]["gpus"] == 0
    finally:
        if watcher is not None:
            _stop_process_group(watcher, graceful_s=5)
        _stop_process_group(head, graceful_s=30)
        shutil.rmtree(ray_tmp, ignore_errors=True)


# -------------------------------------------------- subprocess entry points (not tests)
def _hold(worker_ips: list[str]) -> None:
    from ray.cluster_utils import Cluster

    # Fast death detection, so Tune sees the node loss within a second or two.
    system_config = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "_system_config": system_config})
    try:
        workers = {ip: cluster.add_node(num_cpus=1, node_ip_address=ip) for ip in worker_ips}
        cluster.wait_for_nodes()
        print(json.dumps({"address": cluster.address, "workers": list(workers)}), flush=True)
        for line in sys.stdin:
            command = line.split()
            if command[:1] == ["remove"]:
                cluster.remove_node(workers.pop(command[1]), allow_graceful=False)
                print(json.dumps({"removed_at": time.time()}), flush=True)
            elif command[:1] == ["quit"]:
                break
    finally:
        cluster.shutdown()


def _watch(address: str) -> None:
    import ray
    from ray.experimental.internal_kv import _internal_kv_get

    ray.init(address=address, log_to_driver=False)
    while True:
        alive = [n for n in ray.nodes() if n["Alive"]]
        gpus = sum(n["Resources"].get("GPU", 0) for n in alive)
        autoscaler = _internal_kv_get("__autoscaling_status") is not None
        print(json.dumps({"t": time.time(), "alive": len(alive), "gpus": gpus, "autoscaler": autoscaler}), flush=True)
        time.sleep(0.5)


if __name__ == "__main__":
    if sys.argv[1] == "hold":
        _hold(sys.argv[2:])
    elif sys.argv[1] == "watch":
        _watch(sys.argv[2])
