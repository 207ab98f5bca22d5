"""The Ray Tune function trainable: one trial of the multi-task GAN, in iterations.

The trial config is a flat dict: GANConfig fields plus the orchestrator keys
``steps_per_iteration``, ``iterations``, ``samples_kept``, ``config_id``, ``baseline_key``
(see search_spaces). Optuna trials carry λ as ``lambda_<i>`` raw weights instead of
``lambdas``; :func:`gan_config_dict` turns either form into GANConfig fields (the Parquet sink
uses the same function, so what is recorded is what ran).

Each iteration trains ``steps_per_iteration`` steps, evaluates every task and reports with
``ray.tune.report(metrics, checkpoint=...)`` (``ray.train.report`` fails inside Tune in Ray
2.60). A checkpoint holds ``state.pt`` (the GAN's full state), ``meta.json`` (iteration, time)
and ``samples.npz`` (``images`` (n_tasks, k, C, H, W) in [-1, 1] and ``tasks``). A diverged
trial reports once more with ``diverged=True`` and the message, then returns: it ends
TERMINATED for Tune (not retried) and ``diverged`` in trials.parquet.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import tune

from trainables.config import INDEPENDENT, GANConfig
from trainables.data import TaskSet, load_tasks
from trainables.keys import METRIC_NAMES, ORCHESTRATOR_KEYS
from trainables.train import DivergenceError, MultiTaskGAN, PopulationGAN

STATE_FILE, META_FILE, SAMPLES_FILE = "state.pt", "meta.json", "samples.npz"


def samples_file(arm: int | None) -> str:
    """A checkpoint's samples of one arm (``None``: a one-arm trial's)."""
    return SAMPLES_FILE if arm is None else f"samples-a{arm}.npz"
# With reuse_actors one worker process runs many trials of the same data: load it once.
_TASKSET_CACHE: dict[tuple, TaskSet] = {}


def trial_of(config: dict[str, Any]) -> dict[str, Any]:
    """The flat trial dict inside a Tune config (random/grid sweeps nest it under "trial")."""
    return config["trial"] if "trial" in config else config


def gan_config_dict(config: dict[str, Any]) -> dict[str, Any]:
    """GANConfig fields of a trial config; ``lambda_<i>`` weights are scaled to sum to n."""
    config = trial_of(config)
    out = {k: v for k, v in config.items() if k not in ORCHESTRATOR_KEYS and not k.startswith("lambda_")}
    raw = sorted((int(k.split("_", 1)[1]), float(v)) for k, v in config.items() if k.startswith("lambda_"))
    if raw:
        weights = np.array([v for _, v in raw])
        out["lambdas"] = [round(float(x), 6) for x in weights / weights.sum() * len(weights)]
    if out.get("mode") == INDEPENDENT and raw:  # Optuna baselines: λ=1 whatever was drawn
        out["alpha"], out["lambdas"] = 0.0, [1.0] * len(raw)
    if out.get("lambdas") is not None:
        out["lambdas"] = tuple(float(x) for x in out["lambdas"])
    return out


def _tasks_for(cfg: GANConfig) -> TaskSet:
    subset_seed = None if cfg.samples_per_task is None else cfg.seed  # as MultiTaskGAN loads it
    key = (cfg.data, cfg.samples_per_task, cfg.test_fraction, subset_seed)
    if key not in _TASKSET_CACHE:
        _TASKSET_CACHE[key] = load_tasks(cfg.data, samples_per_task=cfg.samples_per_task,
                                         test_fraction=cfg.test_fraction, subset_seed=subset_seed)
    return _TASKSET_CACHE[key]


def _device_and_share() -> tuple[str, float, float]:
    """The device Ray gave this trial and its (cpu, gpu) share."""
    resources = tune.get_context().get_trial_resources()
    bundle = resources.required_resources if resources is not None else {}
    cpus, gpus = float(bundle.get("CPU", 1.0)), float(bundle.get("GPU", 0.0))
    torch.set_num_threads(max(1, int(cpus)))
    # Ray sets CUDA_VISIBLE_DEVICES to the GPU it assigned, so that GPU is cuda:0 here.
    if gpus > 0 and ray.get_gpu_ids() and torch.cuda.is_available():
        # Trials packed on one GPU must not starve each other of memory.
        torch.cuda.set_per_process_memory_fraction(min(1.0, gpus), 0)
        return "cuda:0", cpus, gpus
    return "cpu", cpus, gpus


def _write_checkpoint(directory: Path, gan: MultiTaskGAN, iteration: int, time_s: float, k: int,
                      losses: dict[str, list[float]]) -> None:
    torch.save(gan.state_dict(), directory / STATE_FILE)
    (directory / META_FILE).write_text(json.dumps({"iteration": iteration, "time_s": time_s, "step": gan.step,
                                                   "losses": losses}))
    if k > 0:
        np.savez_compressed(directory / SAMPLES_FILE, images=gan.sample(k), tasks=np.array(gan.tasks.names))


class UntrustedCheckpointError(RuntimeError):
    """A checkpoint's state.pt holds something other than tensors and plain containers."""


def load_state(path: Path, device: str) -> dict[str, Any]:
    """Read a checkpoint's state.pt without running any code it may carry.

    The storage may be writable by others (a shared bucket): ``weights_only=True`` lets torch
    rebuild only tensors and plain containers, so a planted pickle is refused, never executed,
    and the trial fails with this one line."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        # torch's message opens with advice to retry with weights_only=False: name the culprit.
        reason = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln),
                      lines[0] if lines else type(e).__name__)
        raise UntrustedCheckpointError(
            f"checkpoint {path}: refused to load ({type(e).__name__}: {reason[:200]}); it is not a "
            f"state this trainable wrote — delete the checkpoint or restart the trial from scratch") from None


def _restore(gan: MultiTaskGAN) -> tuple[int, float, dict[str, list[float]] | None]:
    """Load the trial's checkpoint, if any: (completed iterations, seconds spent, last losses)."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return 0, 0.0, None
    with checkpoint.as_directory() as directory:
        state = load_state(Path(directory) / STATE_FILE, gan.device)
        meta = json.loads((Path(directory) / META_FILE).read_text())
    # Under PBT a trial continues another trial's weights with a mutated config (that is the
    # point of PBT), so the checkpoint's recorded config is replaced by this trial's.
    state["config"] = gan.config.to_dict()
    gan.load_state_dict(state)
    return int(meta["iteration"]), float(meta["time_s"]), meta.get("losses")


def _iteration_result(gan: MultiTaskGAN, iteration: int, spent: float, losses: dict[str, list[float]],
                      per_task: list[dict[str, float]], placement: dict[str, Any]) -> dict[str, Any]:
    metrics: dict[str, Any] = {"iteration": iteration, "step": gan.step, "time_s": spent, "diverged": False,
                               **placement}
    for i, name in enumerate(gan.tasks.names):
        for m in METRIC_NAMES:
            metrics[f"{m}/{name}"] = float(per_task[i][m])
        metrics[f"g_loss/{name}"] = float(losses["g_loss"][i])
        metrics[f"d_loss/{name}"] = float(losses["d_loss"][i])
    for m in ("fid", "kid"):
        metrics[f"{m}_mean"] = float(np.mean([t[m] for t in per_task]))
    return metrics


def multitask_gan_trainable(config: dict[str, Any]) -> None:
    """Ray Tune function trainable (see the module docstring)."""
    # One line per checkpoint from Ray's storage layer would drown the progress lines.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    config = trial_of(config)
    if "arms" in config:
        return group_trainable(config["arms"])
    gan_cfg = GANConfig.from_dict(gan_config_dict(config))
    device, cpus, gpus = _device_and_share()
    steps = int(config["steps_per_iteration"])
    iterations = int(config["iterations"])
    keep = int(config.get("samples_kept", 16))
    placement = {"node_ip": ray.util.get_node_ip_address(), "hostname": socket.gethostname(),
                 "cpus": cpus, "gpus": gpus, "device": device}

    gan = MultiTaskGAN(gan_cfg, tasks=_tasks_for(gan_cfg), device=device,
                       metrics_cache_dir=os.environ.get("MTGAN_CACHE"),
                       reference_tasks=_tasks_for(dataclasses.replace(gan_cfg, samples_per_task=None)))
    placement["arch"] = gan.arch  # the arch built (a config may leave it to the image size)
    done, spent, last_losses = _restore(gan)
    if done >= iterations and last_losses is not None:
        # Restored from a final checkpoint (PBT cloned a finished trial, or the driver died
        # before Tune recorded the end): report that state once so the trial's last result is it.
        tune.report(_iteration_result(gan, done, spent, last_losses, gan.evaluate(), placement))
        return
    for iteration in range(done + 1, iterations + 1):
        started = time.perf_counter()
        try:
            out = gan.train(steps)
            per_task = gan.evaluate()
        except DivergenceError as e:
            tune.report({"iteration": iteration, "step": gan.step, "diverged": True, "error": str(e),
                         "fid_mean": float("inf"), "kid_mean": float("inf"),
                         "time_s": spent + time.perf_counter() - started, **placement})
            return
        spent += time.perf_counter() - started
        losses = {k: [float(x) for x in v] for k, v in out.items()}
        metrics = _iteration_result(gan, iteration, spent, losses, per_task, placement)
        with tempfile.TemporaryDirectory(prefix="mtgan-ckpt-") as tmp:
            _write_checkpoint(Path(tmp), gan, iteration, spent, keep, losses)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


# ------------------------------------------------------------------------ a group of arms
def group_trainable(arms: list[dict[str, Any]]) -> None:
    """A Tune trial that trains a group of arms as one PopulationGAN (``{"arms": [trial, ...]}``).

    Each iteration reports one result: the group's iteration, step, time and place, its mean
    fid/kid, and ``arms``: one entry per arm still training (``arm``: its index in the group,
    then the metrics a one-arm trial reports), or, once, ``diverged`` and the error of an arm
    that diverged in that iteration (it is dropped; the others go on unchanged). A checkpoint
    holds the group's state, ``meta.json`` and ``samples-a<k>.npz`` per surviving arm."""
    configs = [GANConfig.from_dict(gan_config_dict(arm)) for arm in arms]
    device, cpus, gpus = _device_and_share()
    first = arms[0]
    steps, iterations = int(first["steps_per_iteration"]), int(first["iterations"])
    keep = int(first.get("samples_kept", 16))
    placement = {"node_ip": ray.util.get_node_ip_address(), "hostname": socket.gethostname(),
             "cpus": cpus, "gpus": gpus, "device": device}
    group = PopulationGAN(configs, tasks=_tasks_for(configs[0]), device=device,
                          metrics_cache_dir=os.environ.get("MTGAN_CACHE"),
                          reference_tasks=_tasks_for(dataclasses.replace(configs[0], samples_per_task=None)))
    placement["arch"] = group.arch  # the arch built (a config may leave it to the image size)
    done, spent, last_losses = 0, 0.0, None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            group.load_state_dict(load_state(Path(directory) / STATE_FILE, device))
            meta = json.loads((Path(directory) / META_FILE).read_text())
        done, spent, last_losses = int(meta["iteration"]), float(meta["time_s"]), meta.get("losses")
    if done >= iterations and last_losses is not None:  # the driver died before Tune recorded the end
        losses = {int(k): v for k, v in last_losses.items()}
        tune.report(_group_metrics(group, done, spent, losses, group.evaluate(), {}, placement))
        return
    for iteration in range(done + 1, iterations + 1):
        started = time.perf_counter()
        before = set(group.diverged)
        out = group.train(steps)
        diverged = {arm: error for arm, error in group.diverged.items() if arm not in before}
        per_arm = group.evaluate() if group.arm_ids else {}
        spent += time.perf_counter() - started
        losses = {arm: {k: [float(x) for x in v] for k, v in arm_losses.items()} for arm, arm_losses in out.items()}
        metrics = _group_metrics(group, iteration, spent, losses, per_arm, diverged, placement)
        if not group.arm_ids:  # every arm diverged: nothing left to train or checkpoint
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="mtgan-ckpt-") as tmp:
            torch.save(group.state_dict(), Path(tmp) / STATE_FILE)
            (Path(tmp) / META_FILE).write_text(json.dumps({"iteration": iteration, "time_s": spent,
                                                           "step": group.step, "losses": losses}))
            if keep > 0:
                samples = group.sample(keep)
                for a, arm in enumerate(group.arm_ids):
                    np.savez_compressed(Path(tmp) / samples_file(arm), images=samples[a],
                                        tasks=np.array(group.tasks.names))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def _group_metrics(group: PopulationGAN, iteration: int, spent: float, losses: dict[int, dict[str, list[float]]],
                   per_arm: dict[int, list[dict[str, float]]], diverged: dict[int, DivergenceError],
                   placement: dict[str, Any]) -> dict[str, Any]:
    entries = []
    for arm in group.arm_ids:
        entry = _iteration_result(group, iteration, spent, losses[arm], per_arm[arm], {})
        entries.append({"arm": arm, **{k: v for k, v in entry.items() if k not in ("iteration", "step", "time_s")}})
    for arm, error in diverged.items():
        entries.append({"arm": arm, "diverged": True, "error": str(error),
                        "fid_mean": float("inf"), "kid_mean": float("inf")})
    fids = [e["fid_mean"] for e in entries if not e["diverged"]]
    kids = [e["kid_mean"] for e in entries if not e["diverged"]]
    return {"iteration": iteration, "step": group.step, "time_s": spent, "diverged": not group.arm_ids, **placement,
            "fid_mean": float(np.mean(fids)) if fids else float("inf"),
            "kid_mean": float(np.mean(kids)) if kids else float("inf"), "arms": entries}
