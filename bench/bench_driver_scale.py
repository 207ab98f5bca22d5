"""Driver scale (a benchmark, not a test): the Parquet sink's throughput and Tune's per-trial
overhead as sweeps grow.

1. Sink throughput: ``ParquetResults`` fed synthetic results of a 4-task sweep straight through
   its Tune hooks (no Ray), on local disk and on S3 (moto's server on loopback). Tune calls the
   callbacks' ``get_state`` whenever it saves the experiment state (every few seconds); the
   bench does so every ``--save-every`` seconds. Prints results/s (goals: >= 500 local,
   >= 100 S3).
2. Per-trial driver overhead: real Tune on the local Ray, a trainable that only reports 2
   iterations of made-up metrics, the sink attached, N trials. Prints wall seconds per trial for
   a small and a large N and their ratio (goal: large / small <= 1.2).

    .venv/bin/python bench/bench_driver_scale.py [--small 200] [--large 2000] [--cpus-per-trial 1]
                                                 [--baseline] [--skip-tune] [--skip-s3]
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import search_spaces as ss  # noqa: E402
from orchestrator.results import ParquetResults  # noqa: E402
from orchestrator.tune_mapping import TRIAL_INDEX, TrialAt, planned_trials_search, tune_scheduler  # noqa: E402
from trainables.keys import METRIC_NAMES  # noqa: E402

TASKS = ["0", "1", "2", "3"]


def trial_configs(n: int) -> list[dict]:
    spec = ss.load_space("smoke")
    base = ss.expand_trials(spec, len(TASKS))
    return [{**base[i % len(base)], "seed": i} for i in range(n)]


def fake_result(iteration: int) -> dict:
    result = {"iteration": iteration, "step": iteration * 10, "time_s": 0.1 * iteration, "diverged": False,
              "fid_mean": 1.0, "kid_mean": 0.1, "node_ip": "127.0.0.1", "hostname": "bench", "device": "cpu",
              "cpus": 1.0, "gpus": 0.0}
    for t in TASKS:
        for m in (*METRIC_NAMES, "g_loss", "d_loss"):
            result[f"{m}/{t}"] = 0.5
    return result


class FakeTrial:
    """What the sink reads from a Tune Trial."""

    def __init__(self, trial_id: str, config: dict) -> None:
        self.trial_id, self.config, self.status = trial_id, config, "RUNNING"
        self.last_result: dict = {}
        self.error_msg = self.error_file = None

    def is_finished(self) -> bool:
        return self.status in ("TERMINATED", "ERROR")


def sink_throughput(location: str, n_trials: int, iterations: int, save_every: float) -> float:
    sink = ParquetResults(location, "bench", TASKS, 1.0, 0.0)
    sink.setup()
    trials = [FakeTrial(f"t{i:05d}", c) for i, c in enumerate(trial_configs(n_trials))]
    started = last_save = time.perf_counter()
    results = 0
    for trial in trials:
        sink.on_trial_start(0, trials, trial)
    for iteration in range(1, iterations + 1):
        for trial in trials:
            trial.last_result = fake_result(iteration)
            sink.on_trial_result(0, trials, trial, trial.last_result)
            results += 1
            sink.on_step_end(0, trials)
            if time.perf_counter() - last_save >= save_every:
                sink.get_state()
                last_save = time.perf_counter()
    for trial in trials:
        trial.status = "TERMINATED"
        sink.on_trial_complete(0, trials, trial)
    sink.on_experiment_end(trials)
    return results / (time.perf_counter() - started)


def moto_endpoint() -> tuple[str, object]:
    from moto.server import ThreadedMotoServer
    import pyarrow.fs as pafs

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        os.environ[key] = value
    pafs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1", scheme="http",
                      endpoint_override=f"127.0.0.1:{port}", allow_bucket_creation=True).create_dir("bench")
    return f"127.0.0.1:{port}", server


def tiny_trainable(config: dict) -> None:
    from ray import tune

    for iteration in (1, 2):
        tune.report(fake_result(iteration))


def tune_overhead(n_trials: int, storage: Path, cpus_per_trial: float, baseline: bool = False) -> float:
    """Wall seconds per trial of a sweep of ``n_trials`` tiny trials, handed to Tune as the sweep
    does. ``baseline``: as it did before 2026-11-27 (a grid over trial indices, which Tune copies
    whole for every trial, and Tune's FIFOScheduler, which scans every trial at every step)."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    configs = trial_configs(n_trials)
    name = f"tiny-{n_trials}" + ("-baseline" if baseline else "")
    sink = ParquetResults(str(storage / name), name, TASKS, 1.0, 0.0)
    if baseline:
        param_space = {TRIAL_INDEX: tune.grid_search(range(n_trials)), "trial": tune.sample_from(TrialAt(configs))}
        search_alg, num_samples, scheduler = None, 1, FIFOScheduler()
    else:  # what a fifo sweep uses
        param_space, search_alg, num_samples = planned_trials_search(configs)
        scheduler = tune_scheduler(ss.load_space("smoke"))
    tuner = tune.Tuner(
        tune.with_resources(tiny_trainable, {"cpu": cpus_per_trial}),
        param_space=param_space,
        tune_config=tune.TuneConfig(reuse_actors=True, search_alg=search_alg, num_samples=num_samples,
                                    scheduler=scheduler),
        run_config=tune.RunConfig(storage_path=str(storage), name=name, callbacks=[sink],
                                  verbose=0))
    started = time.perf_counter()
    tuner.fit()
    return (time.perf_counter() - started) / n_trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sink-trials", type=int, default=50)
    parser.add_argument("--sink-iterations", type=int, default=20)
    parser.add_argument("--save-every", type=float, default=5.0, help="seconds between get_state calls")
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=2000)
    parser.add_argument("--cpus-per-trial", type=float, default=1.0,
                        help="CPUs each tiny trial asks for: below 1 more run at once, so the driver's own "
                             "per-trial work is what limits the rate (default 1)")
    parser.add_argument("--baseline", action="store_true",
                        help="also time the large sweep handed to Tune as before 2026-11-27: a grid over trial "
                             "indices and Tune's FIFOScheduler (the baseline; hours at 20,000 trials)")
    parser.add_argument("--skip-tune", action="store_true")
    parser.add_argument("--skip-s3", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        local = sink_throughput(str(Path(tmp) / "local"), args.sink_trials, args.sink_iterations, args.save_every)
        print(f"sink, local disk: {local:.0f} results/s ({args.sink_trials} trials x "
              f"{args.sink_iterations} iterations, 4 tasks; goal >= 500)", flush=True)
        if not args.skip_s3:
            endpoint, server = moto_endpoint()
            try:
                s3 = sink_throughput(f"s3://bench/run?endpoint_override={endpoint}&scheme=http",
                                     args.sink_trials, args.sink_iterations, args.save_every)
            finally:
                server.stop()
            print(f"sink, S3 (moto on loopback): {s3:.0f} results/s (goal >= 100)", flush=True)
        if args.skip_tune:
            return
        import ray

        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            # warm-up, not timed: the first sweep in a process also pays for Ray's first workers and imports
            tune_overhead(min(args.small, 50), Path(tmp) / "warm-up", args.cpus_per_trial)
            small = tune_overhead(args.small, Path(tmp), args.cpus_per_trial)
            print(f"tune, {args.small} tiny trials: {small * 1000:.1f} ms per trial", flush=True)
            large = tune_overhead(args.large, Path(tmp), args.cpus_per_trial)
            print(f"tune, {args.large} tiny trials: {large * 1000:.1f} ms per trial", flush=True)
            print(f"per-trial overhead ratio {args.large}/{args.small}: {large / small:.2f} (goal <= 1.2)", flush=True)
            if args.baseline:
                before = tune_overhead(args.large, Path(tmp), args.cpus_per_trial, baseline=True)
                print(f"tune, {args.large} tiny trials as before (index grid, Tune's FIFOScheduler): "
                      f"{before * 1000:.1f} ms per trial ({before / large:.2f}x now; ratio to {args.small} now: "
                      f"{before / small:.2f})", flush=True)
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
