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
import io
import json
import logging
import math
import os
import pickle
import socket
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import tune

from trainables.config import HARD, INDEPENDENT, GANConfig
from trainables.data import TaskSet, load_tasks
from trainables.halving import RungRecords
from trainables.keys import METRIC_NAMES, ORCHESTRATOR_KEYS
from trainables.train import DivergenceError, MultiTaskGAN, PopulationGAN, arm_state

STATE_FILE, META_FILE, SAMPLES_FILE = "state.pt", "meta.json", "samples.npz"
# In a group's trial config: ASHA per arm, {"records": the actor's name, "max_t", "grace_period",
# "reduction_factor"} (RungRecords); PBT inside the group, {"interval", "quantile_fraction",
# "resample_probability", "alpha": [kind, arg]} (kind loguniform: [low, high]; choice: values).
ASHA_KEY, PBT_KEY = "asha", "pbt"


def arm_trial_id(group_id: str, index: int) -> str:
    """An arm's trial_id in the results: its group's Tune trial id and its index there."""
    return f"{group_id}-a{index}"


def rung_records(settings: dict[str, Any]):
    """The sweep's one RungRecords, a Ray actor named ``settings["records"]`` (the driver's
    scheduler creates it, so it lives as long as the driver; each group finds it by name)."""
    rungs = {k: v for k, v in settings.items() if k != "records"}
    return (ray.remote(num_cpus=0)(RungRecords)
            .options(name=settings["records"], get_if_exists=True).remote(**rungs))


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
        return group_trainable(config["arms"], config.get(ASHA_KEY), config.get(PBT_KEY))
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
def group_trainable(arms: list[dict[str, Any]], asha: dict[str, Any] | None = None,
                    pbt: dict[str, Any] | None = None) -> None:
    """A Tune trial that trains a group of arms as one PopulationGAN (``{"arms": [trial, ...]}``).

    Each iteration reports one result: the group's iteration, step, time and place, its mean
    fid/kid, and ``arms``: one entry per arm still training (``arm``: its index in the group,
    then the metrics a one-arm trial reports), or, once, ``diverged`` and the error of an arm
    that diverged in that iteration (it is dropped; the others go on unchanged). A checkpoint
    holds the group's state, ``meta.json`` and ``samples-a<k>.npz`` per surviving arm.

    ``asha``: successive halving per arm (trainables.halving) against the sweep's shared rung
    records. At a rung, a shared arm the records stop reports that iteration with ``stopped``
    set and is dropped: the group's compute shrinks, and the trial ends when no arm is left.
    Its final state (``final-a<k>.pt``, one-arm layout) and samples go into that checkpoint and
    every later one, so the group's latest checkpoint holds every arm. Baselines are never judged.

    ``pbt``: population-based training inside the group (:func:`exploit_and_explore`) after
    every ``interval`` iterations; each arm's entry carries ``config``, the trial dict it ran
    that iteration with, and the checkpoint holds the configurations PBT gave."""
    arms = [dict(arm) for arm in arms]  # PBT changes an arm's configuration: the trial dict it runs with
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
    records = rung_records(asha) if asha else None
    # Arms ASHA stopped: their final state and samples, carried into every later checkpoint.
    finished: dict[str, bytes] = {}
    explored: dict[int, dict[str, Any]] = {}
    done, spent, last_losses = 0, 0.0, None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            meta = json.loads((Path(directory) / META_FILE).read_text())
            if not (Path(directory) / STATE_FILE).exists():
                return  # ASHA had stopped every arm (the driver died before Tune recorded the end)
            explored = {int(arm): trial for arm, trial in meta.get("explored", {}).items()}
            for arm, trial in explored.items():  # the configurations PBT gave, before the state of them
                arms[arm] = trial
                group.set_arm(arm, GANConfig.from_dict(gan_config_dict(trial)))
            group.load_state_dict(load_state(Path(directory) / STATE_FILE, device))
            finished = {name: (Path(directory) / name).read_bytes() for name in meta.get("finished", [])}
        done, spent, last_losses = int(meta["iteration"]), float(meta["time_s"]), meta.get("losses")
    if done >= iterations and last_losses is not None:  # the driver died before Tune recorded the end
        losses = {int(k): v for k, v in last_losses.items()}
        metrics = _group_metrics(group, done, spent, losses, group.evaluate(), {}, placement)
        tune.report(_with_configs(metrics, arms) if pbt else metrics)
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
        if pbt:
            metrics = _with_configs(metrics, arms)
        if not group.arm_ids:  # every arm diverged: nothing left to train or checkpoint
            tune.report(metrics)
            return
        if pbt and iteration % int(pbt["interval"]) == 0 and iteration < iterations:
            fids = {entry["arm"]: entry["fid_mean"] for entry in metrics["arms"] if not entry["diverged"]}
            rng = np.random.default_rng([zlib.crc32(json.dumps(arms, sort_keys=True).encode()), iteration])
            for target in exploit_and_explore(group, arms, fids, pbt, rng):
                explored[target] = arms[target]
        samples = group.sample(keep) if keep > 0 else None
        if records is not None:
            stopped = _halve(records, tune.get_context().get_trial_id(), group, metrics, iteration)
            finished.update(_final_files(group, stopped, samples))
            samples = None if samples is None else samples[[a for a, arm in enumerate(group.arm_ids)
                                                            if arm not in stopped]]
            group.drop_arms(stopped)
        with tempfile.TemporaryDirectory(prefix="mtgan-ckpt-") as tmp:
            if group.arm_ids:
                torch.save(group.state_dict(), Path(tmp) / STATE_FILE)
            (Path(tmp) / META_FILE).write_text(json.dumps({"iteration": iteration, "time_s": spent,
                                                           "step": group.step, "losses": losses,
                                                           "arms_left": len(group.arm_ids),
                                                           "finished": sorted(finished),
                                                           "explored": explored}))
            for name, content in finished.items():
                (Path(tmp) / name).write_bytes(content)
            for a, arm in enumerate(group.arm_ids if samples is not None else []):
                np.savez_compressed(Path(tmp) / samples_file(arm), images=samples[a], tasks=np.array(group.tasks.names))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
        if not group.arm_ids:  # ASHA stopped every arm left: the trial ends, its compute freed
            return


def _with_configs(metrics: dict[str, Any], arms: list[dict[str, Any]]) -> dict[str, Any]:
    """Each arm's entry with ``config``: the trial dict it ran with (PBT changes it)."""
    for entry in metrics["arms"]:
        entry["config"] = dict(arms[entry["arm"]])
    return metrics


def exploit_and_explore(group: PopulationGAN, arms: list[dict[str, Any]], fids: dict[int, float],
                        settings: dict[str, Any], rng: np.random.Generator) -> list[int]:
    """PBT among a group's shared arms (as Tune's PopulationBasedTraining among trials; baselines
    are never in the population): each arm in the worst ``quantile_fraction`` by fid continues
    from a random arm of the best (``copy_arm``: weights, S, Adam's moments) with that arm's
    configuration and a perturbed α (resampled with ``resample_probability``, else × 0.8 or
    × 1.2 within the range; a choice moves to a neighbouring value), keeping its own seed and
    random streams. Updates ``arms`` (the trial dicts) and returns the arms changed."""
    population = sorted((arm for arm in group.arm_ids if group.arm_configs[arm].mode != INDEPENDENT and arm in fids),
                        key=lambda arm: (fids[arm], arm))
    count = int(math.ceil(len(population) * settings["quantile_fraction"]))
    count = min(count, len(population) // 2)  # as Tune: the two quantiles never overlap
    best, worst = population[:count], population[len(population) - count:]
    for target in worst:
        donor = int(rng.choice(best))
        group.copy_arm(donor, target)
        own = {k: arms[target][k] for k in ("seed", "replicate") if k in arms[target]}  # its own streams
        trial = {**arms[donor], **own, "alpha": _perturbed(arms[donor]["alpha"], settings, rng)}
        if group.arm_configs[donor].mode == HARD:  # α does nothing under hard sharing
            trial["alpha"] = arms[donor]["alpha"]
        arms[target] = trial
        group.set_arm(target, GANConfig.from_dict(gan_config_dict(trial)))
    return worst


def _perturbed(alpha: float, settings: dict[str, Any], rng: np.random.Generator) -> float:
    kind, arg = settings["alpha"]
    resample = rng.random() < settings["resample_probability"]
    if kind == "loguniform":
        low, high = float(arg[0]), float(arg[1])
        if resample:
            return float(np.exp(rng.uniform(np.log(low), np.log(high))))
        return float(np.clip(alpha * rng.choice([0.8, 1.2]), low, high))
    values = [float(v) for v in arg]
    if resample or alpha not in values:
        return float(rng.choice(values))
    index = values.index(alpha) + int(rng.choice([-1, 1]))
    return values[min(max(index, 0), len(values) - 1)]


def final_state_file(arm: int) -> str:
    """A checkpoint's file holding the final state of an arm ASHA stopped (one-arm layout)."""
    return f"final-a{arm}.pt"


def _final_files(group: PopulationGAN, arms: list[int], samples: np.ndarray | None) -> dict[str, bytes]:
    """The files that keep stopped arms' final states (and samples) in later checkpoints."""
    files: dict[str, bytes] = {}
    state = group.state_dict() if arms else None
    for arm in arms:
        buffer = io.BytesIO()
        torch.save(arm_state(state, arm), buffer)
        files[final_state_file(arm)] = buffer.getvalue()
        if samples is not None:
            buffer = io.BytesIO()
            np.savez_compressed(buffer, images=samples[group.arm_ids.index(arm)], tasks=np.array(group.tasks.names))
            files[samples_file(arm)] = buffer.getvalue()
    return files


def _halve(records, group_id: str, group: PopulationGAN, metrics: dict[str, Any], iteration: int) -> list[int]:
    """Ask the rung records which shared arms to stop at ``iteration``; flag their entries."""
    entries = {entry["arm"]: entry for entry in metrics["arms"] if not entry["diverged"]}
    values = {arm_trial_id(group_id, arm): entries[arm]["fid_mean"] for arm in group.arm_ids
              if group.arm_configs[arm].mode != INDEPENDENT}
    if not values:
        return []
    stopped_ids = set(ray.get(records.judge.remote(iteration, values)))
    stopped = [arm for arm in group.arm_ids if arm_trial_id(group_id, arm) in stopped_ids]
    for arm in stopped:
        entries[arm]["stopped"] = True
    return stopped


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
            # A tuple, not a list: Tune's TensorBoard logger takes a list for a histogram and, failing
            # on dicts, printed the whole list in a warning (256 arms: ~300 KB); a tuple it skips.
            "kid_mean": float(np.mean(kids)) if kids else float("inf"), "arms": tuple(entries)}
